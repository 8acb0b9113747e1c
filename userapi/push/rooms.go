package push

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/roomserver"
)

// member is a joined member of a room as push rules need them.
type member struct {
	name  string // display name in the room, as given
	lower string // lowered, for contains_display_name
}

// roomInfo is what evaluation needs of a room's current state, kept from
// the events it sees (loaded from the database the first time).
type roomInfo struct {
	// loadPos is the highest position reflected by the state loaded from
	// the database: older state events are already in it.
	loadPos  int64
	members  map[string]member
	name     string
	alias    string          // the canonical alias
	creators map[string]bool // privileged creators (room versions that have them)
	hasPL    bool
	usersDef int64
	users    map[string]int64
	notify   map[string]int64
}

func newRoomInfo() *roomInfo { return &roomInfo{members: make(map[string]member)} }

// level is a user's power level.
func (ri *roomInfo) level(user string) int64 {
	if ri.creators[user] {
		return 1 << 53
	}
	if l, ok := ri.users[user]; ok {
		return l
	}
	return ri.usersDef
}

// parseLevel reads a power level given as a number or (in old rooms) a string.
func parseLevel(raw json.RawMessage) (int64, bool) {
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		if i, err := n.Int64(); err == nil {
			return i, true
		}
		if f, err := n.Float64(); err == nil {
			return int64(f), true
		}
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if i, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return i, true
		}
	}
	return 0, false
}

// apply updates the room from a state event.
func (ri *roomInfo) apply(e *roomserver.Event) {
	if e.StateKey == nil {
		return
	}
	switch e.Type {
	case "m.room.member":
		if e.Membership != "join" {
			delete(ri.members, *e.StateKey)
			return
		}
		var c struct {
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(contentOf(e.JSON), &c)
		ri.members[*e.StateKey] = member{name: c.DisplayName, lower: strings.ToLower(c.DisplayName)}
	case "m.room.name":
		if *e.StateKey == "" {
			ri.name = contentString(e.JSON, "name")
		}
	case "m.room.canonical_alias":
		if *e.StateKey == "" {
			ri.alias = contentString(e.JSON, "alias")
		}
	case "m.room.create":
		if *e.StateKey != "" {
			return
		}
		var c struct {
			Version    string   `json:"room_version"`
			Additional []string `json:"additional_creators"`
		}
		_ = json.Unmarshal(contentOf(e.JSON), &c)
		if c.Version == "" {
			c.Version = "1"
		}
		v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(c.Version))
		ri.creators = map[string]bool{}
		if err == nil && v.PrivilegedCreators() {
			ri.creators[e.Sender] = true
			for _, u := range c.Additional {
				ri.creators[u] = true
			}
		} else if !ri.hasPL {
			// Without power levels the creator has 100 (set below on load).
			ri.users = map[string]int64{e.Sender: 100}
		}
	case "m.room.power_levels":
		if *e.StateKey != "" {
			return
		}
		var c struct {
			Users         map[string]json.RawMessage `json:"users"`
			UsersDefault  json.RawMessage            `json:"users_default"`
			Notifications map[string]json.RawMessage `json:"notifications"`
		}
		_ = json.Unmarshal(contentOf(e.JSON), &c)
		ri.hasPL = true
		ri.usersDef, _ = parseLevel(c.UsersDefault)
		ri.users = make(map[string]int64, len(c.Users))
		for u, raw := range c.Users {
			if l, ok := parseLevel(raw); ok {
				ri.users[u] = l
			}
		}
		ri.notify = nil
		for k, raw := range c.Notifications {
			if l, ok := parseLevel(raw); ok {
				if ri.notify == nil {
					ri.notify = make(map[string]int64, len(c.Notifications))
				}
				ri.notify[k] = l
			}
		}
	}
}

func contentOf(js json.RawMessage) json.RawMessage {
	var outer struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(js, &outer) != nil || len(outer.Content) == 0 {
		return json.RawMessage("{}")
	}
	return outer.Content
}

// contentString is a string field of an event's content ("" when it is
// missing or not a string).
func contentString(js json.RawMessage, key string) string {
	var c map[string]json.RawMessage
	var v string
	if json.Unmarshal(contentOf(js), &c) == nil {
		_ = json.Unmarshal(c[key], &v)
	}
	return v
}

// room returns the info of the event's room, loading it if needed from the
// state right after the event (not the current state: when evaluation runs
// behind, the current state may hold later joins, which must not receive
// this event's notifications, or already have the invitee joined, who must
// get the invite's). The caller holds evalMu.
func (s *Service) room(ctx context.Context, e *roomserver.Event) (*roomInfo, error) {
	if ri, ok := s.roomCache.Get(e.RoomID); ok {
		return ri, nil
	}
	evs, err := s.rooms.StateAfter(ctx, *e)
	if err != nil {
		return nil, err
	}
	ri := newRoomInfo()
	ri.loadPos = e.Pos // the state after e holds no later event
	// The create event first, so power levels override its defaults.
	for i := range evs {
		if evs[i].Type == "m.room.create" {
			ri.apply(&evs[i])
		}
	}
	for i := range evs {
		if evs[i].Type != "m.room.create" {
			ri.apply(&evs[i])
		}
	}
	s.roomCache.Put(e.RoomID, ri)
	return ri, nil
}
