package roomserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Bounds of the space hierarchy walk.
const (
	// DefaultHierarchyLimit and MaxHierarchyLimit bound the rooms of one page.
	DefaultHierarchyLimit = 50
	MaxHierarchyLimit     = 100
)

// maxHierarchyVisits bounds the rooms one request looks at (each costs a
// few queries), whatever the depth, the page and the number of children a
// space has. A variable for tests.
var maxHierarchyVisits = 2000

// HierarchyRequest is a parsed GET /rooms/{roomId}/hierarchy.
type HierarchyRequest struct {
	RoomID, UserID string
	// MaxDepth is how far below the root to go; negative means no limit.
	MaxDepth      int
	SuggestedOnly bool
	Limit         int
	From          string
}

// ChildState is an m.space.child event as the hierarchy shows it (stripped,
// with its timestamp).
type ChildState struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Sender         string          `json:"sender"`
	Content        json.RawMessage `json:"content"`
	OriginServerTS int64           `json:"origin_server_ts"`
}

// HierarchyRoom is one room of the hierarchy: its summary and, for spaces,
// its children.
type HierarchyRoom struct {
	PublicRoom
	RoomVersion string `json:"room_version,omitempty"`
	Encryption  string `json:"encryption,omitempty"`
	// AllowedRoomIDs are the rooms whose members may join a restricted room.
	AllowedRoomIDs []string     `json:"allowed_room_ids,omitempty"`
	ChildrenState  []ChildState `json:"children_state"`
}

// HierarchyResponse is the answer of /hierarchy.
type HierarchyResponse struct {
	Rooms     []HierarchyRoom `json:"rooms"`
	NextBatch string          `json:"next_batch,omitempty"`
}

// hierarchyToken is the content of a next_batch token: the request's
// parameters (which may not change between pages) and how many rooms of the
// depth-first order the earlier pages returned.
type hierarchyToken struct {
	Root      string `json:"r"`
	MaxDepth  int    `json:"d"`
	Suggested bool   `json:"s"`
	Offset    int    `json:"o"`
}

func (t hierarchyToken) encode() string {
	return base64.RawURLEncoding.EncodeToString(mustJSON(t))
}

func decodeHierarchyToken(s string) (hierarchyToken, bool) {
	var t hierarchyToken
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(raw, &t) != nil || t.Offset <= 0 {
		return hierarchyToken{}, false
	}
	return t, true
}

// child is one valid m.space.child of a space.
type child struct {
	roomID    string
	order     string // "" when absent or invalid
	suggested bool
	ts        int64
	state     ChildState
	via       []string // servers that may know the room
}

// roomSummary is what the hierarchy needs to know about one room.
type roomSummary struct {
	HierarchyRoom
	allow    []string // rooms whose members may join a restricted room
	children []child
}

// storableRoomID is validRoomID without NUL characters, which PostgreSQL
// cannot compare with its text columns.
func storableRoomID(id string) bool { return validRoomID(id) && !strings.ContainsRune(id, 0) }

// validOrder: the order of an m.space.child is at most 50 printable ASCII characters.
func validOrder(s string) bool {
	if s == "" || len(s) > 50 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// sortChildren orders children as the spec wants: those with an order
// first, by order; then by the child event's timestamp; then by room ID.
func sortChildren(cs []child) {
	sort.SliceStable(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if (a.order != "") != (b.order != "") {
			return a.order != ""
		}
		if a.order != b.order {
			return a.order < b.order
		}
		if a.ts != b.ts {
			return a.ts < b.ts
		}
		return a.roomID < b.roomID
	})
}

// parseChild reads an m.space.child event; ok is false for a child without
// via servers (a removed or invalid one).
func parseChild(stateKey, sender string, ts int64, content json.RawMessage) (child, bool) {
	var c struct {
		Via       []string `json:"via"`
		Order     any      `json:"order"`
		Suggested any      `json:"suggested"`
	}
	if json.Unmarshal(content, &c) != nil || len(c.Via) == 0 || !storableRoomID(stateKey) {
		return child{}, false
	}
	ch := child{roomID: stateKey, ts: ts, state: ChildState{Type: spec.MSpaceChild, StateKey: stateKey, Sender: sender, Content: content, OriginServerTS: ts}}
	if o, ok := c.Order.(string); ok && validOrder(o) {
		ch.order = o
	}
	ch.suggested = c.Suggested == true
	ch.via = c.Via
	return ch, true
}

var summaryTypes = []string{spec.MRoomCreate, spec.MRoomName, spec.MRoomTopic, spec.MRoomCanonicalAlias, spec.MRoomAvatar,
	spec.MRoomJoinRules, spec.MRoomHistoryVisibility, spec.MRoomGuestAccess, spec.MRoomEncryption}

// summarize loads a room's summary from its current state; nil when the
// room is not known here.
func (s *Service) summarize(ctx context.Context, roomID string) (*roomSummary, error) {
	row, err := selectRoom(ctx, s.db, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sum := &roomSummary{HierarchyRoom: HierarchyRoom{PublicRoom: PublicRoom{RoomID: roomID, JoinRule: "invite"}, RoomVersion: row.version, ChildrenState: []ChildState{}}}
	rows, err := s.db.Query(ctx, `SELECT s.type, s.state_key, e.sender, e.origin_ts, e.json FROM room_state s JOIN events e ON e.event_id = s.event_id
WHERE s.room_id = $1 AND ((s.state_key = '' AND s.type IN ($2)) OR s.type = $3)`, roomID, summaryTypes, spec.MSpaceChild)
	if err != nil {
		return nil, fmt.Errorf("summary state of %s: %w", roomID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var typ, key, sender, js string
		var ts int64
		if err := rows.Scan(&typ, &key, &sender, &ts, &js); err != nil {
			return nil, err
		}
		var ev struct {
			Content json.RawMessage `json:"content"`
		}
		_ = json.Unmarshal([]byte(js), &ev)
		if typ == spec.MSpaceChild {
			if ch, ok := parseChild(key, sender, ts, ev.Content); ok {
				sum.children = append(sum.children, ch)
			}
			continue
		}
		var c map[string]any
		_ = json.Unmarshal(ev.Content, &c)
		str := func(k string) string { v, _ := c[k].(string); return v }
		switch typ {
		case spec.MRoomCreate:
			sum.RoomType = str("type")
		case spec.MRoomName:
			sum.Name = str("name")
		case spec.MRoomTopic:
			sum.Topic = PlainTopic(ev.Content)
		case spec.MRoomCanonicalAlias:
			sum.CanonicalAlias = str("alias")
		case spec.MRoomAvatar:
			sum.AvatarURL = str("url")
		case spec.MRoomJoinRules:
			if jr := str("join_rule"); jr != "" {
				sum.JoinRule = jr
			}
			if allow, ok := c["allow"].([]any); ok {
				for _, a := range allow {
					if m, ok := a.(map[string]any); ok && m["type"] == spec.MRoomMembership {
						if id, ok := m["room_id"].(string); ok {
							sum.allow = append(sum.allow, id)
						}
					}
				}
			}
		case spec.MRoomHistoryVisibility:
			sum.WorldReadable = str("history_visibility") == "world_readable"
		case spec.MRoomGuestAccess:
			sum.GuestCanJoin = str("guest_access") == "can_join"
		case spec.MRoomEncryption:
			sum.Encryption = str("algorithm")
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if sum.JoinRule == spec.Restricted || sum.JoinRule == spec.KnockRestricted {
		sum.AllowedRoomIDs = sum.allow
	}
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM room_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`, roomID).Scan(&sum.NumJoinedMembers); err != nil {
		return nil, fmt.Errorf("member count of %s: %w", roomID, err)
	}
	sortChildren(sum.children)
	return sum, nil
}

// accessible tells whether the user may see a room in the hierarchy: they
// are joined or invited, the room is world-readable, anyone may join or
// knock, or it is restricted to members of a room the user is joined to.
func (s *Service) accessible(ctx context.Context, sum *roomSummary, userID string) (bool, error) {
	// A room known only from another server is not here: no membership.
	m, _, err := s.Membership(ctx, sum.RoomID, userID)
	if err != nil && !merr.Is(err, "M_NOT_FOUND") {
		return false, err
	}
	if m == spec.Join || m == spec.Invite || sum.WorldReadable {
		return true, nil
	}
	if m == spec.Ban {
		return false, nil
	}
	switch sum.JoinRule {
	case spec.Public, spec.Knock, spec.KnockRestricted:
		return true, nil
	case spec.Restricted:
		for _, id := range sum.allow {
			if !storableRoomID(id) {
				continue
			}
			am, _, err := s.Membership(ctx, id, userID)
			if err != nil && !merr.Is(err, "M_NOT_FOUND") {
				return false, err
			}
			if am == spec.Join {
				return true, nil
			}
		}
	}
	return false, nil
}

// Hierarchy walks a space depth-first: the root, then each child (in the
// spec's order) followed by its own children, down to MaxDepth, skipping
// rooms the user may not see. A room this server is not in is asked of a
// server of its m.space.child's via list (federation on); rooms no server
// answers for are skipped. Pages are
// cut after Limit rooms; next_batch continues where the page ended.
func (s *Service) Hierarchy(ctx context.Context, req HierarchyRequest) (*HierarchyResponse, error) {
	resp, _, err := s.hierarchy(ctx, req)
	return resp, err
}

// hierarchy is Hierarchy; it also returns how many rooms it looked at
// (summarized), which maxHierarchyVisits bounds. Children are looked at
// when the walk reaches them, not when their space is walked: a space with
// many children costs no more than maxHierarchyVisits rooms.
func (s *Service) hierarchy(ctx context.Context, req HierarchyRequest) (*HierarchyResponse, int, error) {
	if !storableRoomID(req.RoomID) {
		return nil, 0, merr.InvalidParam("Invalid room ID %q", req.RoomID)
	}
	limit := req.Limit
	if limit == 0 {
		limit = DefaultHierarchyLimit
	}
	if limit < 0 {
		return nil, 0, merr.InvalidParam("limit must be positive")
	}
	limit = min(limit, MaxHierarchyLimit)
	maxDepth := req.MaxDepth
	if maxDepth < 0 {
		maxDepth = -1
	}
	offset := 0
	if req.From != "" {
		tok, ok := decodeHierarchyToken(req.From)
		if !ok || tok.Root != req.RoomID {
			return nil, 0, merr.InvalidParam("Unknown pagination token")
		}
		if tok.MaxDepth != maxDepth || tok.Suggested != req.SuggestedOnly {
			return nil, 0, merr.InvalidParam("max_depth and suggested_only cannot change between pages")
		}
		offset = tok.Offset
	}

	walk := &spaceWalk{suggested: req.SuggestedOnly}
	root, err := s.walkSummary(ctx, walk, req.RoomID, rootVia(req.RoomID, s.opts.ServerName))
	if err != nil {
		return nil, 1, err
	}
	if root != nil {
		ok, err := s.accessible(ctx, root, req.UserID)
		if err != nil {
			return nil, 1, err
		}
		if !ok {
			root = nil
		}
	}
	if root == nil {
		// Unknown rooms answer like rooms one may not see, so that room IDs cannot be probed.
		return nil, 1, merr.Forbidden("You cannot see this room")
	}

	// An item is a room to walk: the root with its summary, the others by
	// ID, summarized (and checked) when the walk reaches them.
	type item struct {
		id    string
		sum   *roomSummary
		depth int
		via   []string
	}
	stack := []item{{id: root.RoomID, sum: root}}
	visited := map[string]bool{}
	summarized := 1
	resp := &HierarchyResponse{Rooms: []HierarchyRoom{}}
	seen := 0 // accessible rooms in depth-first order so far
	for len(stack) > 0 && len(visited) < maxHierarchyVisits {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if visited[it.id] {
			continue
		}
		visited[it.id] = true
		if it.sum == nil {
			summarized++
			sum, err := s.walkSummary(ctx, walk, it.id, it.via)
			if err != nil {
				return nil, summarized, err
			}
			if sum == nil {
				continue // not known here
			}
			ok, err := s.accessible(ctx, sum, req.UserID)
			if err != nil {
				return nil, summarized, err
			}
			if !ok {
				continue
			}
			it.sum = sum
		}
		if seen == offset+limit {
			// One more room exists past this page.
			resp.NextBatch = hierarchyToken{Root: req.RoomID, MaxDepth: maxDepth, Suggested: req.SuggestedOnly, Offset: offset + limit}.encode()
			break
		}
		seen++
		var children []child
		if it.sum.RoomType == "m.space" {
			for _, c := range it.sum.children {
				if !req.SuggestedOnly || c.suggested {
					children = append(children, c)
				}
			}
		}
		if seen > offset {
			room := it.sum.HierarchyRoom
			room.ChildrenState = make([]ChildState, 0, len(children))
			for _, c := range children {
				room.ChildrenState = append(room.ChildrenState, c.state)
			}
			resp.Rooms = append(resp.Rooms, room)
		}
		if maxDepth >= 0 && it.depth >= maxDepth {
			continue
		}
		// Push in reverse so that the first child is walked first.
		for i := len(children) - 1; i >= 0; i-- {
			if id := children[i].roomID; !visited[id] {
				stack = append(stack, item{id: id, depth: it.depth + 1, via: children[i].via})
			}
		}
	}
	return resp, summarized, nil
}
