package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/haven-chat/haven/storage"
)

// change is a membership or history_visibility value taking effect at a position.
type change struct {
	pos   int64
	value string
}

// visibility decides which events of one room one user may see, from the
// user's membership history and the room's history_visibility history.
type visibility struct {
	user       string
	membership []change // ascending
	histVis    []change // ascending
	current    string   // current membership
	// all sees every event: a server admin reading a room (AdminMessages).
	all bool
}

func loadVisibility(ctx context.Context, q storage.Querier, roomID, userID string) (*visibility, error) {
	v := &visibility{user: userID}
	rows, err := q.Query(ctx, `SELECT pos, COALESCE(membership, '') FROM events WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2 ORDER BY pos`, roomID, userID)
	if err != nil {
		return nil, fmt.Errorf("membership history: %w", err)
	}
	for rows.Next() {
		var c change
		if err := rows.Scan(&c.pos, &c.value); err != nil {
			rows.Close()
			return nil, err
		}
		v.membership = append(v.membership, c)
	}
	rows.Close()
	if len(v.membership) > 0 {
		v.current = v.membership[len(v.membership)-1].value
	}
	rows, err = q.Query(ctx, `SELECT pos, json FROM events WHERE room_id = $1 AND type = 'm.room.history_visibility' AND state_key = '' ORDER BY pos`, roomID)
	if err != nil {
		return nil, fmt.Errorf("history visibility: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var pos int64
		var js string
		if err := rows.Scan(&pos, &js); err != nil {
			return nil, err
		}
		v.histVis = append(v.histVis, change{pos: pos, value: historyVisibility(js)})
	}
	return v, rows.Err()
}

// at returns the value in effect just before pos (the state an event sees).
func at(cs []change, pos int64, def string) string {
	i := sort.Search(len(cs), func(i int) bool { return cs[i].pos >= pos })
	if i == 0 {
		return def
	}
	return cs[i-1].value
}

// membershipAfter is the membership right after pos (inclusive).
func (v *visibility) membershipAfter(pos int64) string { return at(v.membership, pos+1, "leave") }

// history is the user's membership history in the room, for
// readerMemberships; nil when not loaded.
func (v *visibility) history(roomID string) map[string][]change {
	if v == nil {
		return nil
	}
	return map[string][]change{roomID: v.membership}
}

// joinedWithin tells whether the user joined at a position in (after, upto].
func (v *visibility) joinedWithin(after, upto int64) bool {
	for _, c := range v.membership {
		if c.pos > after && c.pos <= upto && c.value == "join" {
			return true
		}
	}
	return false
}

// canSee applies the history_visibility rules to one event.
func (v *visibility) canSee(pos int64, sender, typ string, stateKey *string) bool {
	if v.all {
		return true
	}
	// A user always sees their own membership events.
	if typ == "m.room.member" && stateKey != nil && *stateKey == v.user {
		return true
	}
	hv := at(v.histVis, pos, "shared")
	if hv == "world_readable" {
		return true
	}
	m := v.membershipAfter(pos)
	if m == "join" {
		return true
	}
	switch hv {
	case "shared":
		return v.current == "join"
	case "invited":
		return m == "invite"
	}
	return false
}

// historyVisibility reads an m.room.history_visibility event's setting
// ("shared" when it has none).
func historyVisibility(eventJSON string) string {
	var e struct {
		Content struct {
			HistoryVisibility string `json:"history_visibility"`
		} `json:"content"`
	}
	_ = json.Unmarshal([]byte(eventJSON), &e)
	if e.Content.HistoryVisibility == "" {
		return "shared"
	}
	return e.Content.HistoryVisibility
}
