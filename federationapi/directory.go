package federationapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/federationapi/origin"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
)

// Directory is what the directory endpoints need from the roomserver: the
// public room directory and the summaries of spaces.
type Directory interface {
	PublicRoomsPage(ctx context.Context, q roomserver.PublicRoomsQuery) (*roomserver.PublicRoomsPage, error)
	HierarchyForServer(ctx context.Context, roomID, origin string, suggestedOnly bool) (*roomserver.ServerHierarchy, error)
}

// directoryRoutes mounts the public room directory and the space
// hierarchy for other servers (signed requests).
func (a *API) directoryRoutes(r chi.Router) {
	h := httpx.Handle
	r.Get("/v1/publicRooms", h(a.publicRooms))
	r.Post("/v1/publicRooms", h(a.publicRooms))
	r.Get("/v1/hierarchy/{roomId}", h(a.hierarchy))
}

// publicRooms answers a page of this server's public room directory
// (GET with query parameters, POST with a filter).
func (a *API) publicRooms(w http.ResponseWriter, r *http.Request) error {
	if a.Directory == nil {
		return merr.Unrecognized("The room directory is not served here")
	}
	query, err := roomserver.ParsePublicRoomsQuery(r.Method == http.MethodPost, r.URL.Query(), func(v any) error { return httpx.DecodeJSON(r, v, 16<<10) })
	if err != nil {
		return err
	}
	page, err := a.Directory.PublicRoomsPage(r.Context(), query)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, page)
}

// hierarchy answers another server's question about a room of a space.
func (a *API) hierarchy(w http.ResponseWriter, r *http.Request) error {
	if a.Directory == nil {
		return merr.Unrecognized("The space hierarchy is not served here")
	}
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	suggested := false
	switch r.URL.Query().Get("suggested_only") {
	case "", "false":
	case "true":
		suggested = true
	default:
		return merr.InvalidParam("suggested_only must be true or false")
	}
	from := origin.From(r.Context())
	if from == "" {
		return merr.Custom(http.StatusUnauthorized, "M_UNAUTHORIZED", "The request is not signed")
	}
	h, err := a.Directory.HierarchyForServer(r.Context(), roomID, from, suggested)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, h)
}

// Bounds of the answers of other servers' directories.
const (
	maxRemoteRooms     = roomserver.MaxPublicRoomsLimit
	maxRemoteTokenLen  = 1024
	maxRemoteTextBytes = 4096
)

// RemotePublicRooms asks server for a page of its public room directory
// (POST /publicRooms, with the filter and the room types). The rooms it
// answers are checked: a valid room ID and texts within bounds, at most
// MaxPublicRoomsLimit of them.
func (p *Peers) RemotePublicRooms(ctx context.Context, server string, q roomserver.PublicRoomsQuery) (*roomserver.PublicRoomsPage, error) {
	body := map[string]any{}
	if q.Limit > 0 {
		body["limit"] = q.Limit
	}
	if q.Since != "" {
		body["since"] = q.Since
	}
	if q.ThirdPartyInstanceID != "" {
		body["third_party_instance_id"] = q.ThirdPartyInstanceID
	}
	if q.Search != "" || len(q.RoomTypes) > 0 {
		filter := map[string]any{}
		if q.Search != "" {
			filter["generic_search_term"] = q.Search
		}
		if len(q.RoomTypes) > 0 {
			filter["room_types"] = q.RoomTypes
		}
		body["filter"] = filter
	}
	var resp struct {
		Chunk     []json.RawMessage `json:"chunk"`
		NextBatch string            `json:"next_batch"`
		PrevBatch string            `json:"prev_batch"`
		Total     int               `json:"total_room_count_estimate"`
	}
	if err := p.signedRequest(ctx, http.MethodPost, server, "/_matrix/federation/v1/publicRooms", body, &resp); err != nil {
		return nil, remoteError(server, err)
	}
	page := &roomserver.PublicRoomsPage{Chunk: []roomserver.PublicRoom{}, Total: max(resp.Total, 0)}
	for _, raw := range resp.Chunk {
		if len(page.Chunk) == maxRemoteRooms {
			break
		}
		var pr roomserver.PublicRoom
		if json.Unmarshal(raw, &pr) != nil || !saneRemoteRoomID(pr.RoomID) {
			continue
		}
		for _, s := range []*string{&pr.Name, &pr.Topic, &pr.CanonicalAlias, &pr.AvatarURL, &pr.JoinRule, &pr.RoomType} {
			if len(*s) > maxRemoteTextBytes {
				*s = ""
			}
		}
		pr.NumJoinedMembers = max(pr.NumJoinedMembers, 0)
		page.Chunk = append(page.Chunk, pr)
	}
	if len(resp.NextBatch) <= maxRemoteTokenLen {
		page.NextBatch = resp.NextBatch
	}
	if len(resp.PrevBatch) <= maxRemoteTokenLen {
		page.PrevBatch = resp.PrevBatch
	}
	return page, nil
}

func saneRemoteRoomID(id string) bool {
	_, err := spec.NewRoomID(id)
	return err == nil && len(id) <= 255
}

// RemoteHierarchy asks server about a room of a space (GET
// /hierarchy/{roomId}); the roomserver checks what it answers.
func (p *Peers) RemoteHierarchy(ctx context.Context, server, roomID string, suggestedOnly bool) (*roomserver.ServerHierarchy, error) {
	path := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID)
	if suggestedOnly {
		path += "?suggested_only=true"
	}
	var out roomserver.ServerHierarchy
	if err := p.signedRequest(ctx, http.MethodGet, server, path, nil, &out); err != nil {
		return nil, remoteError(server, err)
	}
	return &out, nil
}

// signedRequest makes a request to another server signed with our key,
// through the federation client (the allowlist, discovery, TLS), and
// decodes its JSON answer into out. It is for answers whose fields
// fclient's types leave out (room_types, room_version, encryption).
func (p *Peers) signedRequest(ctx context.Context, method, server, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	return p.signedJSON(ctx, method, server, path, body, out)
}
