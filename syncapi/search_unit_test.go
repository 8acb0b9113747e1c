package syncapi

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
)

func TestSearchWordsAndQueries(t *testing.T) {
	for _, c := range []struct {
		term     string
		words    []string
		postgres string
		sqlite   string
	}{
		{"deploy", []string{"deploy"}, "deploy:*", `"deploy"*`},
		{"  Deploy   FAILED ", []string{"deploy", "failed"}, "deploy:* & failed:*", `"deploy"* "failed"*`},
		{`"a" OR b:* & !c | d'e`, []string{"a", "or", "b", "c", "d", "e"}, "a:* & or:* & b:* & c:* & d:* & e:*", `"a"* "or"* "b"* "c"* "d"* "e"*`},
		{"café 42 café", []string{"café", "42"}, "café:* & 42:*", `"café"* "42"*`},
		{"!!! ***", nil, "", ""},
	} {
		got := searchWords(c.term)
		if !reflect.DeepEqual(got, c.words) {
			t.Errorf("%q: words %q want %q", c.term, got, c.words)
			continue
		}
		if q := searchQuery(storage.Postgres, got); q != c.postgres {
			t.Errorf("%q: postgres %q want %q", c.term, q, c.postgres)
		}
		if q := searchQuery(storage.SQLite, got); q != c.sqlite {
			t.Errorf("%q: sqlite %q want %q", c.term, q, c.sqlite)
		}
	}
	many := ""
	for i := 0; i < 40; i++ {
		many += string(rune('a'+i%26)) + string(rune('a'+i/26)) + " "
	}
	if n := len(searchWords(many)); n != maxSearchWords {
		t.Errorf("%d words kept, want %d", n, maxSearchWords)
	}
}

func TestDirectoryMatch(t *testing.T) {
	name := "Ada Lovelace"
	for _, c := range []struct {
		user  string
		name  *string
		words []string
		want  bool
	}{
		{"@ada:test", nil, []string{"ad"}, true},
		{"@ada:test", nil, []string{"test"}, false}, // the server name is not searched
		{"@x:test", &name, []string{"love"}, true},
		{"@x:test", &name, []string{"ada", "love"}, true},
		{"@x:test", &name, []string{"ada", "byron"}, false},
		{"@x:test", &name, []string{"velace"}, false}, // words match from their start
	} {
		if got := directoryMatch(UserDirectoryResult{UserID: c.user, DisplayName: c.name}, c.words); got != c.want {
			t.Errorf("%s %v %q: got %v", c.user, c.name, c.words, got)
		}
	}
	if got := likeEscape(`50%_off\`); got != `50\%\_off\\` {
		t.Errorf("likeEscape: %q", got)
	}
}

func TestWithUnsigned(t *testing.T) {
	e := &roomserver.Event{Pos: 3, EventID: "$e", RoomID: "!r", Type: "m.room.message", Sender: "@a:x", OriginTS: 1000,
		JSON: json.RawMessage(`{"content":{"body":"hi"},"unsigned":{"x":1}}`)}
	ce, err := render(e)
	if err != nil {
		t.Fatal(err)
	}
	rel := []byte(`{"m.thread":{"count":1}}`)
	for _, because := range [][]byte{nil, []byte(`{"event_id":"$r"}`)} {
		js := withUnsigned(ce.appendJSON(nil, 2000, "", "", because), "m.relations", rel)
		var out struct {
			Content  map[string]any `json:"content"`
			Unsigned map[string]any `json:"unsigned"`
		}
		if err := json.Unmarshal(js, &out); err != nil {
			t.Fatalf("%v: %s", err, js)
		}
		if out.Unsigned["m.relations"] == nil || out.Unsigned["x"] == nil || out.Unsigned["age"] == nil || out.Content["body"] != "hi" {
			t.Fatalf("unsigned: %s", js)
		}
		if because != nil && out.Unsigned["redacted_because"] == nil {
			t.Fatalf("redacted_because lost: %s", js)
		}
	}
	if got := withUnsigned([]byte(`{"a":1}`), "k", []byte("1")); string(got) != `{"a":1}` {
		t.Fatalf("not an event: %s", got)
	}
}

func TestAggregateBundle(t *testing.T) {
	parent := &clientEvent{eventID: "$p", sender: "@alice:x"}
	latest, err := render(&roomserver.Event{EventID: "$l", RoomID: "!r", Type: "m.room.message", Sender: "@bob:x", OriginTS: 5, JSON: json.RawMessage(`{"content":{"body":"r"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	a := &aggregate{threadCount: 2, threadLatest: latest, threadSenders: map[string]bool{"@bob:x": true},
		edit: &editRef{EventID: "$e", TS: 7, Sender: "@alice:x"}, references: []string{"$ref"}}
	for _, c := range []struct {
		user         string
		participated bool
	}{{"@alice:x", true}, {"@bob:x", true}, {"@carol:x", false}} {
		var out struct {
			Thread struct {
				Latest struct {
					EventID string `json:"event_id"`
				} `json:"latest_event"`
				Count        int  `json:"count"`
				Participated bool `json:"current_user_participated"`
			} `json:"m.thread"`
			Replace   editRef `json:"m.replace"`
			Reference struct {
				Chunk []map[string]string `json:"chunk"`
			} `json:"m.reference"`
		}
		b := a.bundle(parent, c.user, "D", 10)
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		if out.Thread.Count != 2 || out.Thread.Latest.EventID != "$l" || out.Thread.Participated != c.participated ||
			out.Replace.EventID != "$e" || len(out.Reference.Chunk) != 1 {
			t.Errorf("%s: %s", c.user, b)
		}
	}
	// A redacted parent keeps its thread and references, not its edit.
	red := &clientEvent{eventID: "$p", sender: "@alice:x", redacted: "$red"}
	var out map[string]json.RawMessage
	if err := json.Unmarshal(a.bundle(red, "@carol:x", "", 10), &out); err != nil || out["m.replace"] != nil || out["m.thread"] == nil {
		t.Fatalf("redacted parent: %v %v", out, err)
	}
	if (&aggregate{}).bundle(parent, "@a:x", "", 0) != nil {
		t.Fatal("an empty aggregate bundled something")
	}
}
