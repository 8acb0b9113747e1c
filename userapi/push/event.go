package push

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/haven-chat/haven/roomserver"
)

// valueKind is the JSON type of a flattened event field.
type valueKind uint8

const (
	kindNone valueKind = iota // absent, an object, or a non-integer number
	kindString
	kindInt
	kindBool
	kindNull
	kindArray
)

// value is one field of an event as push conditions see it.
type value struct {
	kind valueKind
	s    string
	i    int64
	b    bool
	arr  []value // kindArray: its scalar elements
}

// equal compares two scalars by JSON type and value.
func (v value) equal(w value) bool {
	if v.kind != w.kind {
		return false
	}
	switch v.kind {
	case kindString:
		return v.s == w.s
	case kindInt:
		return v.i == w.i
	case kindBool:
		return v.b == w.b
	case kindNull:
		return true
	}
	return false
}

// Event is a room event parsed once for evaluating every recipient's push
// rules: its dotted-path fields (type, sender, room_id, state_key and
// content.*, dots inside keys escaped as `\.`), its body lowered for
// case-insensitive matching, and whether it carries m.mentions.
type Event struct {
	ID       string
	RoomID   string
	Type     string
	Sender   string
	StateKey *string
	// ThreadID is the thread root of an event in a thread (an m.thread
	// relation), "" for the main timeline.
	ThreadID string
	TS       int64
	Content  json.RawMessage

	fields      map[string]value
	lowerBody   string
	hasBody     bool
	hasMentions bool
}

// maxFlattenDepth bounds how deep content is flattened.
const maxFlattenDepth = 8

// ParseEvent parses a stored event's fields once.
func ParseEvent(e *roomserver.Event) *Event {
	ev := &Event{ID: e.EventID, RoomID: e.RoomID, Type: e.Type, Sender: e.Sender, StateKey: e.StateKey, TS: e.OriginTS,
		fields: make(map[string]value, 12)}
	if e.RelType == "m.thread" {
		ev.ThreadID = e.RelatesTo
	}
	ev.fields["type"] = value{kind: kindString, s: e.Type}
	ev.fields["sender"] = value{kind: kindString, s: e.Sender}
	ev.fields["room_id"] = value{kind: kindString, s: e.RoomID}
	if e.StateKey != nil {
		ev.fields["state_key"] = value{kind: kindString, s: *e.StateKey}
	}
	var outer struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(e.JSON, &outer) != nil || len(outer.Content) == 0 || outer.Content[0] != '{' {
		ev.Content = json.RawMessage("{}")
		return ev
	}
	ev.Content = outer.Content
	dec := json.NewDecoder(bytes.NewReader(outer.Content))
	dec.UseNumber()
	var content map[string]any
	if dec.Decode(&content) != nil {
		return ev
	}
	flatten(ev.fields, "content", content, 0)
	if b, ok := ev.fields["content.body"]; ok && b.kind == kindString {
		ev.hasBody = true
		ev.lowerBody = strings.ToLower(b.s)
	}
	_, ev.hasMentions = content["m.mentions"]
	return ev
}

func escapeKey(k string) string {
	if !strings.ContainsAny(k, `.\`) {
		return k
	}
	return strings.NewReplacer(`\`, `\\`, `.`, `\.`).Replace(k)
}

func flatten(out map[string]value, prefix string, obj map[string]any, depth int) {
	if depth >= maxFlattenDepth {
		return
	}
	for k, v := range obj {
		key := prefix + "." + escapeKey(k)
		if m, ok := v.(map[string]any); ok {
			flatten(out, key, m, depth+1)
			continue
		}
		if arr, ok := v.([]any); ok {
			vals := make([]value, 0, len(arr))
			for _, x := range arr {
				if sv := scalar(x); sv.kind != kindNone {
					vals = append(vals, sv)
				}
			}
			out[key] = value{kind: kindArray, arr: vals}
			continue
		}
		out[key] = scalar(v)
	}
}

func scalar(v any) value {
	switch x := v.(type) {
	case string:
		return value{kind: kindString, s: x}
	case bool:
		return value{kind: kindBool, b: x}
	case nil:
		return value{kind: kindNull}
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return value{kind: kindInt, i: i}
		}
	}
	return value{}
}

// valueFromJSON converts a condition's value.
func valueFromJSON(raw json.RawMessage) (value, bool) {
	if len(raw) == 0 {
		return value{}, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return value{}, false
	}
	sv := scalar(v)
	return sv, sv.kind != kindNone
}
