package roomserver

import (
	"encoding/json"
	"testing"
)

func TestSearchField(t *testing.T) {
	empty := ""
	other := "x"
	for _, c := range []struct {
		name   string
		ev     Event
		field  string
		text   string
		wanted bool
	}{
		{"message", Event{Type: "m.room.message", JSON: json.RawMessage(`{"content":{"body":"hello"}}`)}, "content.body", "hello", true},
		{"NUL removed", Event{Type: "m.room.message", JSON: json.RawMessage(`{"content":{"body":"a\u0000b"}}`)}, "content.body", "ab", true},
		{"body not a string", Event{Type: "m.room.message", JSON: json.RawMessage(`{"content":{"body":5}}`)}, "", "", false},
		{"blank body", Event{Type: "m.room.message", JSON: json.RawMessage(`{"content":{"body":"  "}}`)}, "", "", false},
		{"no body", Event{Type: "m.room.message", JSON: json.RawMessage(`{"content":{}}`)}, "", "", false},
		{"encrypted", Event{Type: "m.room.encrypted", JSON: json.RawMessage(`{"content":{"ciphertext":"x"}}`)}, "", "", false},
		{"name", Event{Type: "m.room.name", StateKey: &empty, JSON: json.RawMessage(`{"content":{"name":"Ops"}}`)}, "content.name", "Ops", true},
		{"topic", Event{Type: "m.room.topic", StateKey: &empty, JSON: json.RawMessage(`{"content":{"topic":"Deploys"}}`)}, "content.topic", "Deploys", true},
		{"topic with a state key", Event{Type: "m.room.topic", StateKey: &other, JSON: json.RawMessage(`{"content":{"topic":"x"}}`)}, "", "", false},
		{"message as state", Event{Type: "m.room.message", StateKey: &empty, JSON: json.RawMessage(`{"content":{"body":"x"}}`)}, "", "", false},
		{"bad JSON", Event{Type: "m.room.message", JSON: json.RawMessage(`{`)}, "", "", false},
	} {
		f, text, ok := searchField(&c.ev)
		if ok != c.wanted || f != c.field || text != c.text {
			t.Errorf("%s: got %q %q %v", c.name, f, text, ok)
		}
	}
}
