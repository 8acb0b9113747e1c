package filter

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/haven-chat/haven/internal/merr"
)

func FuzzParse(f *testing.F) {
	seeds := []string{
		``, `{}`, `[]`, `null`, `{"room":`, specExample,
		`{"event_format":"federation","event_fields":["content.body","type"]}`,
		`{"room":{"rooms":[],"not_rooms":["!a:x"],"include_leave":true,"timeline":{"limit":10.0,"contains_url":false}}}`,
		`{"room":{"state":{"lazy_load_members":true,"include_redundant_members":true,"types":["*"]}}}`,
		`{"presence":{"limit":1e400,"senders":["@\u0000:x"],"not_types":["m.*"]}}`,
		`{"account_data":{"types":[null]}}`, `{"room":{"timeline":{"limit":-1}}}`,
		`{"room":{"ephemeral":{"types":["m.typing"],"not_senders":[]},"account_data":{"senders":[]}}}`,
		`{"event_format":"client","event_format":null,"presence":null}`,
		"{\"room\":{\"rooms\":[\"\xff\"]}}",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		flt, err := Parse(data)
		if err != nil {
			me, ok := merr.As(err)
			if !ok {
				t.Fatalf("Parse error %v is not a merr.Error", err)
			}
			switch me.Code {
			case "M_NOT_JSON", "M_BAD_JSON", "M_TOO_LARGE":
			default:
				t.Fatalf("Parse error code %s", me.Code)
			}
			return
		}
		checkParsed(t, flt)
		out, err := json.Marshal(flt)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-Parse of %s: %v", out, err)
		}
		if !reflect.DeepEqual(flt, again) {
			t.Fatalf("round trip changed the filter:\n%+v\n%s\n%+v", flt, out, again)
		}
		// Compiling and matching never panic.
		m := flt.Compile()
		_ = m.Room.Timeline.Match("m.room.message", "@a:x", true)
		_ = m.Room.State.Match("", "", false)
		_ = m.Room.AllowsRoom("!a:x")
		_ = m.Presence.MatchSender("@a:x")
		_ = m.Room.Timeline.Limit(DefaultTimelineLimit, MaxTimelineLimit)
	})
}

// checkParsed asserts the invariants Parse promises.
func checkParsed(t *testing.T, f Filter) {
	t.Helper()
	if f.EventFormat != "" && f.EventFormat != FormatClient && f.EventFormat != FormatFederation {
		t.Fatalf("event_format %q", f.EventFormat)
	}
	if f.EventFields != nil && len(f.EventFields) == 0 {
		t.Fatal("empty event_fields not normalised")
	}
	ev := func(e EventFilter) {
		if e.Limit < 0 || e.Limit > MaxLimit {
			t.Fatalf("limit %d", e.Limit)
		}
		for _, l := range [][]string{e.NotTypes, e.NotSenders} {
			if l != nil && len(l) == 0 || len(l) > MaxListEntries {
				t.Fatalf("exclude list %v", l)
			}
		}
	}
	rev := func(r RoomEventFilter) {
		ev(r.EventFilter)
		if r.NotRooms != nil && len(r.NotRooms) == 0 {
			t.Fatal("empty not_rooms not normalised")
		}
	}
	ev(f.Presence)
	ev(f.AccountData)
	rev(f.Room.Ephemeral)
	rev(RoomEventFilter(f.Room.State))
	rev(f.Room.Timeline)
	rev(f.Room.AccountData)
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "0", "42", `{}`, ` {"room":{}}`, "{", "a\x00b", strings.Repeat("9", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := ParseQuery(s)
		if err != nil {
			if _, ok := merr.As(err); !ok {
				t.Fatalf("error %v is not a merr.Error", err)
			}
			return
		}
		if q.Inline && q.ID != "" {
			t.Fatal("both inline and ID")
		}
		if !q.Inline && q.ID != s {
			t.Fatalf("ID %q for %q", q.ID, s)
		}
	})
}

// refMatch is a plain dynamic-programming '*' matcher to check the
// compiled one: ok[j] reports whether the pattern so far matches s[:j].
func refMatch(p, s string) bool {
	ok := make([]bool, len(s)+1)
	ok[0] = true
	for i := 0; i < len(p); i++ {
		next := make([]bool, len(s)+1)
		for j := 0; j <= len(s); j++ {
			if p[i] == '*' {
				next[j] = ok[j] || (j > 0 && next[j-1])
			} else {
				next[j] = j > 0 && ok[j-1] && s[j-1] == p[i]
			}
		}
		ok = next
	}
	return ok[len(s)]
}

func FuzzMatchType(f *testing.F) {
	for _, s := range [][2]string{{"m.room.*", "m.room.message"}, {"*a*b*", "xaybz"}, {"a*a", "a"}, {"**", ""}, {"*x", "xx"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, typ string) {
		if len(pattern) > 256 || len(typ) > 4096 {
			return // keep the reference matcher fast
		}
		if got, want := MatchType(pattern, typ), refMatch(pattern, typ); got != want {
			t.Fatalf("MatchType(%q, %q) = %v, want %v", pattern, typ, got, want)
		}
	})
}

func FuzzHasURL(f *testing.F) {
	for _, s := range []string{`{"url":"x"}`, `{"url":1}`, `{"a":{"url":"x"}}`, `{"\u0075rl":""}`, `{"url":"a","url":null}`, `[1]`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		got := HasURL(content)
		if !json.Valid(content) {
			return // only "no panic" is promised
		}
		var obj map[string]json.RawMessage
		want := false
		if json.Unmarshal(content, &obj) == nil && obj != nil {
			v, ok := obj["url"]
			want = ok && len(v) > 0 && v[0] == '"'
		}
		if got != want {
			t.Fatalf("HasURL(%s) = %v, want %v", content, got, want)
		}
	})
}
