package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/haven-chat/haven/internal/merr"
)

// PublicRoom is one entry of the public room directory.
type PublicRoom struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// PublicRooms lists the published rooms, most members first, whose name,
// topic or alias contains search (case-insensitive; empty matches all).
func (s *Service) PublicRooms(ctx context.Context, search string) ([]PublicRoom, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id FROM rooms WHERE published = $1`, true)
	if err != nil {
		return nil, fmt.Errorf("published rooms: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if len(ids) == 0 {
		return []PublicRoom{}, nil
	}
	byID := make(map[string]*PublicRoom, len(ids))
	for _, id := range ids {
		byID[id] = &PublicRoom{RoomID: id}
	}
	rows, err = s.db.Query(ctx, `SELECT s.room_id, s.type, e.json FROM room_state s JOIN events e ON e.event_id = s.event_id
WHERE s.room_id IN ($1) AND s.state_key = '' AND s.type IN ($2)`, ids,
		[]string{"m.room.name", "m.room.topic", "m.room.canonical_alias", "m.room.avatar", "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access", "m.room.create"})
	if err != nil {
		return nil, fmt.Errorf("directory state: %w", err)
	}
	for rows.Next() {
		var id, typ, js string
		if err := rows.Scan(&id, &typ, &js); err != nil {
			rows.Close()
			return nil, err
		}
		var ev struct {
			Content json.RawMessage `json:"content"`
		}
		_ = json.Unmarshal([]byte(js), &ev)
		var c map[string]any
		_ = json.Unmarshal(ev.Content, &c)
		str := func(k string) string { v, _ := c[k].(string); return v }
		pr := byID[id]
		switch typ {
		case "m.room.name":
			pr.Name = str("name")
		case "m.room.topic":
			pr.Topic = PlainTopic(ev.Content)
		case "m.room.canonical_alias":
			pr.CanonicalAlias = str("alias")
		case "m.room.avatar":
			pr.AvatarURL = str("url")
		case "m.room.join_rules":
			pr.JoinRule = str("join_rule")
		case "m.room.history_visibility":
			pr.WorldReadable = str("history_visibility") == "world_readable"
		case "m.room.guest_access":
			pr.GuestCanJoin = str("guest_access") == "can_join"
		case "m.room.create":
			pr.RoomType = str("type")
		}
	}
	rows.Close()
	rows, err = s.db.Query(ctx, `SELECT room_id, COUNT(*) FROM room_state WHERE room_id IN ($1) AND type = 'm.room.member' AND membership = 'join' GROUP BY room_id`, ids)
	if err != nil {
		return nil, fmt.Errorf("directory member counts: %w", err)
	}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			rows.Close()
			return nil, err
		}
		byID[id].NumJoinedMembers = n
	}
	rows.Close()
	search = strings.ToLower(strings.TrimSpace(search))
	out := make([]PublicRoom, 0, len(byID))
	for _, pr := range byID {
		if search != "" && !strings.Contains(strings.ToLower(pr.Name+"\x00"+pr.Topic+"\x00"+pr.CanonicalAlias), search) {
			continue
		}
		out = append(out, *pr)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].NumJoinedMembers != out[j].NumJoinedMembers {
			return out[i].NumJoinedMembers > out[j].NumJoinedMembers
		}
		return out[i].RoomID < out[j].RoomID
	})
	return out, nil
}

// Bounds of a page of the public room directory.
const (
	DefaultPublicRoomsLimit = 100
	MaxPublicRoomsLimit     = 500
)

// PublicRoomsQuery is a request for a page of the public room directory,
// from a client of this server or from another server.
type PublicRoomsQuery struct {
	// Limit is the most rooms of the page; 0 or out of range: 100.
	Limit int
	// Since is a next_batch or prev_batch token of an earlier page.
	Since string
	// Search keeps the rooms whose name, topic or alias contains it.
	Search string
	// RoomTypes keeps rooms of these types; a nil entry stands for rooms
	// without a type. Empty: every type.
	RoomTypes []*string
	// ThirdPartyInstanceID asks for the rooms of a bridged network: this
	// server has none, so the page is empty.
	ThirdPartyInstanceID string
}

// PublicRoomsPage is a page of the public room directory, as both the
// client and the federation /publicRooms answer it.
type PublicRoomsPage struct {
	Chunk     []PublicRoom `json:"chunk"`
	NextBatch string       `json:"next_batch,omitempty"`
	PrevBatch string       `json:"prev_batch,omitempty"`
	Total     int          `json:"total_room_count_estimate"`
}

// RoomTypeAllowed tells whether a room of type typ ("" for none) passes a
// room_types filter.
func RoomTypeAllowed(types []*string, typ string) bool {
	if len(types) == 0 {
		return true
	}
	for _, t := range types {
		if t == nil && typ == "" || t != nil && *t == typ {
			return true
		}
	}
	return false
}

// PublicRoomsPage answers a page of the public room directory. Tokens are
// offsets into the list ("p<n>"); a token that is not one is
// M_INVALID_PARAM.
func (s *Service) PublicRoomsPage(ctx context.Context, q PublicRoomsQuery) (*PublicRoomsPage, error) {
	limit := q.Limit
	if limit <= 0 || limit > MaxPublicRoomsLimit {
		limit = DefaultPublicRoomsLimit
	}
	offset := 0
	if q.Since != "" {
		rest, ok := strings.CutPrefix(q.Since, "p")
		n, err := strconv.Atoi(rest)
		if !ok || err != nil || n < 0 || rest != strconv.Itoa(n) {
			return nil, merr.InvalidParam("Invalid since token")
		}
		offset = n
	}
	page := &PublicRoomsPage{Chunk: []PublicRoom{}}
	if q.ThirdPartyInstanceID != "" {
		return page, nil
	}
	all, err := s.PublicRooms(ctx, q.Search)
	if err != nil {
		return nil, err
	}
	rooms := all[:0:0]
	for _, pr := range all {
		if RoomTypeAllowed(q.RoomTypes, pr.RoomType) {
			rooms = append(rooms, pr)
		}
	}
	page.Total = len(rooms)
	offset = min(offset, len(rooms))
	end := min(offset+limit, len(rooms))
	page.Chunk = append(page.Chunk, rooms[offset:end]...)
	if end < len(rooms) {
		page.NextBatch = "p" + strconv.Itoa(end)
	}
	if offset > 0 {
		page.PrevBatch = "p" + strconv.Itoa(max(0, offset-limit))
	}
	return page, nil
}
