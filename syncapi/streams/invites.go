package streams

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/haven-chat/haven/roomserver"
)

// Invites answers the invite and knock sections: the stripped state the
// user's invite or knock event carries (unsigned invite_room_state,
// knock_room_state: the roomserver's at a local event, the room's
// server's for a room elsewhere), closed by that event itself. Which
// rooms changed is the rooms stream's (the user's membership positions in
// the notifier); this reads the room's current member event of the user.
type Invites struct{ db querier }

// NewInvites reads invites and knocks from db (the roomserver's events
// and room_state).
func NewInvites(db querier) *Invites { return &Invites{db: db} }

// Invite is the invite state of a room the user is invited to; nil when
// there is none, or when the inviter is one the user ignores.
func (i *Invites) Invite(ctx context.Context, userID, roomID string, ignored map[string]struct{}) ([]json.RawMessage, error) {
	return i.strippedState(ctx, userID, roomID, "invite_room_state", ignored)
}

// Knock is the knock state of a room the user knocked on (of this
// server's making, or as the room's server answered it) and the knock.
func (i *Invites) Knock(ctx context.Context, userID, roomID string) ([]json.RawMessage, error) {
	return i.strippedState(ctx, userID, roomID, "knock_room_state", nil)
}

// strippedState is the stripped state the user's current membership
// event carries in unsigned[key], closed by that event itself; nil when
// there is none, or when its sender is ignored.
func (i *Invites) strippedState(ctx context.Context, userID, roomID, key string, ignored map[string]struct{}) ([]json.RawMessage, error) {
	rows, err := i.db.Query(ctx, `SELECT `+roomserver.EventColumns+` FROM events WHERE event_id = (SELECT event_id FROM room_state WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2)`, roomID, userID)
	if err != nil {
		return nil, fmt.Errorf("membership of %s: %w", roomID, err)
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	ev, err := roomserver.ScanEvent(rows)
	if err != nil {
		return nil, err
	}
	if _, ok := ignored[ev.Sender]; ok {
		return nil, nil
	}
	var f struct {
		Content  json.RawMessage            `json:"content"`
		Unsigned map[string]json.RawMessage `json:"unsigned"`
	}
	_ = json.Unmarshal(ev.JSON, &f)
	var stripped []json.RawMessage
	_ = json.Unmarshal(f.Unsigned[key], &stripped)
	out := make([]json.RawMessage, 0, len(stripped)+1)
	for _, e := range stripped {
		if len(e) > 0 && e[0] == '{' {
			out = append(out, e)
		}
	}
	self, _ := json.Marshal(map[string]any{"type": ev.Type, "state_key": userID, "sender": ev.Sender, "content": f.Content,
		"event_id": ev.EventID, "origin_server_ts": ev.OriginTS})
	return append(out, self), nil
}
