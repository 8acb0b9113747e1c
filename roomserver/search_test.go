package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
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
		{"rich topic", Event{Type: "m.room.topic", StateKey: &empty, JSON: json.RawMessage(`{"content":{"topic":"old","m.topic":{"m.text":[{"mimetype":"text/html","body":"<b>Deploys</b>"},{"body":"Deploys"}]}}}`)}, "content.topic", "Deploys", true},
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

// TestSearchIndexAndBackfill: events are indexed as they are stored and
// unindexed when redacted, and the migration's backfill statements index a
// database that was filled before the index existed the same way.
func TestSearchIndexAndBackfill(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		h := newHarness(t, db)
		name, topic := "Ops room", "Deploys and incidents"
		res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{Preset: "public_chat", Name: &name, Topic: &topic})
		if err != nil {
			t.Fatal(err)
		}
		from := Sender{UserID: "@alice:test", DeviceID: "D"}
		var redact string
		for i, body := range []string{`{"body":"first message"}`, `{"body":"with a NUL \u0000 inside"}`, `{"body":42}`, `{"msgtype":"m.text"}`, `{"body":"to be redacted"}`} {
			id, err := h.s.Send(ctx, from, SendRequest{RoomID: res.RoomID, Type: "m.room.message", Content: json.RawMessage(body), TxnID: fmt.Sprint("t", i)})
			if err != nil {
				t.Fatal(err)
			}
			redact = id
		}
		if _, err := h.s.Redact(ctx, from, res.RoomID, redact, "", "r"); err != nil {
			t.Fatal(err)
		}
		read := func() []string {
			t.Helper()
			if err := h.s.FlushSearchIndex(ctx); err != nil {
				t.Fatal(err)
			}
			rows, err := db.Query(ctx, `SELECT rowid, room_id, field, body FROM event_search ORDER BY rowid`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var out []string
			for rows.Next() {
				var pos int64
				var room, field, body string
				if err := rows.Scan(&pos, &room, &field, &body); err != nil {
					t.Fatal(err)
				}
				// SQLite's backfill keeps a NUL (harmless there: the tokenizer
				// skips it); PostgreSQL cannot store one.
				body = strings.ReplaceAll(body, "\x00", "")
				out = append(out, fmt.Sprintf("%d %v %s %q", pos, room == res.RoomID, field, body))
			}
			return out
		}
		live := read()
		if len(live) != 4 { // name, topic, two messages
			t.Fatalf("indexed: %q", live)
		}
		ms, err := storage.Migrations()
		if err != nil {
			t.Fatal(err)
		}
		var backfill []string
		for _, m := range ms {
			if m.Name != "0005_search" {
				continue
			}
			for _, line := range strings.Split(storage.ForDialect(m.SQL, db.Dialect()), "\n") {
				if strings.HasPrefix(line, "INSERT INTO event_search") {
					backfill = append(backfill, line)
				}
			}
		}
		if len(backfill) != 3 {
			t.Fatalf("backfill statements: %d", len(backfill))
		}
		if _, err := db.Exec(ctx, `DELETE FROM event_search`); err != nil {
			t.Fatal(err)
		}
		for _, q := range backfill {
			if _, err := db.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if got := read(); strings.Join(got, "\n") != strings.Join(live, "\n") {
			t.Fatalf("backfill:\n%s\nlive:\n%s", strings.Join(got, "\n"), strings.Join(live, "\n"))
		}
	})
}
