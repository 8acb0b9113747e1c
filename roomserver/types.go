package roomserver

import (
	"encoding/json"
)

// Event is a stored room event as the rest of Haven sees it.
type Event struct {
	Pos        int64   `json:"pos"`
	EventID    string  `json:"event_id"`
	RoomID     string  `json:"room_id"`
	Type       string  `json:"type"`
	StateKey   *string `json:"state_key,omitempty"`
	Sender     string  `json:"sender"`
	Membership string  `json:"membership,omitempty"`
	Depth      int64   `json:"depth"`
	// Topo is the event's topological depth in the room (topoDepth):
	// history is ordered by (Topo, Pos).
	Topo       int64  `json:"topo"`
	OriginTS   int64  `json:"origin_ts"`
	RelatesTo  string `json:"relates_to,omitempty"`
	RelType    string `json:"rel_type,omitempty"`
	RedactedBy string `json:"redacted_by,omitempty"`
	DeviceID   string `json:"device_id,omitempty"`
	TxnID      string `json:"txn_id,omitempty"`
	// Snapshot is the state snapshot before the event.
	Snapshot int64           `json:"snapshot"`
	JSON     json.RawMessage `json:"json"`
}

// IsState tells whether the event is a state event.
func (e *Event) IsState() bool { return e.StateKey != nil }

// Notice is what the roomserver publishes on the bus topic "room_events"
// after an event commits, in stream order. It carries a copy of the event so
// readers can keep recent events in memory; the database stays the truth.
type Notice struct {
	Event
	// Redacts is set on a redaction that took effect.
	Redacts string `json:"redacts,omitempty"`
	// RedactedJSON is the target's JSON after the redaction.
	RedactedJSON json.RawMessage `json:"redacted_json,omitempty"`
	// Skip marks a position at which nothing was written (the write that
	// had it failed, or found its transaction ID taken): readers move past
	// it. Only Pos is set.
	Skip bool `json:"skip,omitempty"`
}

// Topic is the bus topic of committed room events.
const Topic = "room_events"

type stateKey struct {
	typ, key string
}
