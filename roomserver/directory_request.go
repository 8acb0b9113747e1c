package roomserver

import (
	"net/url"
	"strconv"

	"github.com/haven-chat/haven/internal/merr"
)

// publicRoomsBody is the body of POST /publicRooms, the same for clients
// and for other servers.
type publicRoomsBody struct {
	Limit  int    `json:"limit"`
	Since  string `json:"since"`
	Filter *struct {
		GenericSearchTerm string `json:"generic_search_term"`
		// RoomTypes keeps rooms of these types; null stands for rooms
		// without a type. Absent or empty: every type.
		RoomTypes []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// ParsePublicRoomsQuery reads a /publicRooms request of the client or the
// federation API: the JSON body of a POST (read by decode, which bounds
// it), or the query parameters of a GET. Bad values are M_INVALID_PARAM.
func ParsePublicRoomsQuery(post bool, q url.Values, decode func(any) error) (PublicRoomsQuery, error) {
	var req publicRoomsBody
	if post {
		if err := decode(&req); err != nil {
			return PublicRoomsQuery{}, err
		}
	} else {
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return PublicRoomsQuery{}, merr.InvalidParam("limit must be a whole number")
			}
			req.Limit = n
		}
		req.Since, req.ThirdPartyInstanceID = q.Get("since"), q.Get("third_party_instance_id")
		switch q.Get("include_all_networks") {
		case "", "false":
		case "true":
			req.IncludeAllNetworks = true
		default:
			return PublicRoomsQuery{}, merr.InvalidParam("include_all_networks must be true or false")
		}
	}
	if req.Limit < 0 {
		return PublicRoomsQuery{}, merr.InvalidParam("limit must not be negative")
	}
	if req.IncludeAllNetworks && req.ThirdPartyInstanceID != "" {
		return PublicRoomsQuery{}, merr.InvalidParam("third_party_instance_id cannot be used with include_all_networks")
	}
	query := PublicRoomsQuery{Limit: req.Limit, Since: req.Since, ThirdPartyInstanceID: req.ThirdPartyInstanceID}
	if req.Filter != nil {
		query.Search, query.RoomTypes = req.Filter.GenericSearchTerm, req.Filter.RoomTypes
	}
	return query, nil
}
