package syncapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi/filter"
)

// ClientEvent is an event pre-rendered for clients (exported for handler signatures).
type ClientEvent = clientEvent

// clientEvent is an event pre-rendered in the client format: everything but
// the unsigned object, whose age and transaction_id differ per response.
type clientEvent struct {
	pos      int64
	topo     int64
	eventID  string
	roomID   string
	typ      string
	stateKey *string
	sender   string
	ts       int64
	device   string
	txnID    string
	redacted string
	relType  string
	relTo    string
	hasURL   bool
	snapshot int64
	// head is the JSON object without its closing brace and without unsigned.
	head []byte
	// unsigned holds the stored unsigned fields, without braces (may be empty).
	unsigned []byte
	// content is the event's content (a slice of head).
	content []byte
	size    int
}

// key is the event's place in its room's history.
func (e *clientEvent) key() topoKey { return topoKey{e.topo, e.pos} }

type storedFields struct {
	Content  json.RawMessage `json:"content"`
	Redacts  string          `json:"redacts"`
	StateKey *string         `json:"state_key"`
	Unsigned json.RawMessage `json:"unsigned"`
}

// render turns a stored event into its client form.
func render(e *roomserver.Event) (*clientEvent, error) {
	var f storedFields
	if err := json.Unmarshal(e.JSON, &f); err != nil {
		return nil, fmt.Errorf("parse stored event %s: %w", e.EventID, err)
	}
	ce := &clientEvent{pos: e.Pos, topo: e.Topo, eventID: e.EventID, roomID: e.RoomID, typ: e.Type, stateKey: e.StateKey, sender: e.Sender,
		ts: e.OriginTS, device: e.DeviceID, txnID: e.TxnID, redacted: e.RedactedBy, relType: e.RelType, relTo: e.RelatesTo,
		hasURL: filter.HasURL(f.Content), snapshot: e.Snapshot}
	var b bytes.Buffer
	b.Grow(len(f.Content) + 256)
	b.WriteString(`{"content":`)
	start := b.Len()
	if len(f.Content) == 0 {
		b.WriteString("{}")
	} else {
		b.Write(f.Content)
	}
	end := b.Len()
	b.WriteString(`,"event_id":`)
	writeString(&b, e.EventID)
	b.WriteString(`,"origin_server_ts":`)
	b.WriteString(strconv.FormatInt(e.OriginTS, 10))
	if f.Redacts != "" {
		b.WriteString(`,"redacts":`)
		writeString(&b, f.Redacts)
	} else if e.Type == "m.room.redaction" {
		var c struct {
			Redacts string `json:"redacts"`
		}
		if json.Unmarshal(f.Content, &c) == nil && c.Redacts != "" {
			b.WriteString(`,"redacts":`)
			writeString(&b, c.Redacts)
		}
	}
	b.WriteString(`,"room_id":`)
	writeString(&b, e.RoomID)
	b.WriteString(`,"sender":`)
	writeString(&b, e.Sender)
	if e.StateKey != nil {
		b.WriteString(`,"state_key":`)
		writeString(&b, *e.StateKey)
	}
	b.WriteString(`,"type":`)
	writeString(&b, e.Type)
	ce.head = b.Bytes()
	ce.content = ce.head[start:end:end]
	if u := bytes.TrimSpace(f.Unsigned); len(u) > 2 && u[0] == '{' {
		inner := bytes.TrimSpace(u[1 : len(u)-1])
		if len(inner) > 0 {
			ce.unsigned = inner
		}
	}
	ce.size = len(ce.head) + len(ce.unsigned) + 200
	return ce, nil
}

func writeString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s)
	b.Write(q)
}

// appendJSON writes the event for a reader (user and device; "" for none):
// unsigned gets age, and the transaction_id when this user sent it from
// this device (device IDs are chosen by clients and may repeat across
// users); redactedBecause, if not nil, is the redaction event in client form.
func (c *clientEvent) appendJSON(dst []byte, nowMS int64, user, device string, redactedBecause []byte) []byte {
	dst = append(dst, c.head...)
	dst = append(dst, `,"unsigned":{"age":`...)
	age := nowMS - c.ts
	if age < 0 {
		age = 0
	}
	dst = strconv.AppendInt(dst, age, 10)
	if len(c.unsigned) > 0 {
		dst = append(dst, ',')
		dst = append(dst, c.unsigned...)
	}
	if c.txnID != "" && device != "" && device == c.device && user == c.sender {
		dst = append(dst, `,"transaction_id":`...)
		q, _ := json.Marshal(c.txnID)
		dst = append(dst, q...)
	}
	if redactedBecause != nil {
		dst = append(dst, `,"redacted_because":`...)
		dst = append(dst, redactedBecause...)
	}
	dst = append(dst, "}}"...)
	return dst
}

// JSON renders the event on its own, for no particular reader.
func (c *clientEvent) JSON(nowMS int64) json.RawMessage {
	return c.appendJSON(make([]byte, 0, len(c.head)+len(c.unsigned)+64), nowMS, "", "", nil)
}
