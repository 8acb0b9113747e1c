package syncapi

import (
	"context"
	"strings"
	"testing"

	"github.com/haven-chat/haven/syncapi/notifier"
)

// TestReaderMembershipsFromMemory: events at or after the reader's latest
// membership change get the current membership from the Notifier, with no
// query (the service has no database here); a reader who never had a
// membership gets "leave"; the rendered event gets the field in unsigned.
func TestReaderMembershipsFromMemory(t *testing.T) {
	n := notifier.New(Pos{})
	n.LoadMembership("!a:x", "@bob:x", "join", 10)
	n.LoadMembership("!b:x", "@bob:x", "leave", 20)
	s := &Service{n: n}
	evs := []*clientEvent{
		{roomID: "!a:x", pos: 10}, {roomID: "!a:x", pos: 11},
		{roomID: "!b:x", pos: 20},
		{roomID: "!c:x", pos: 5},
	}
	got, err := s.readerMemberships(context.Background(), "@bob:x", evs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "join,join,leave,leave" {
		t.Fatalf("memberships: %v", got)
	}
	// Before the current membership, a history the caller loaded is used
	// (this Service has no database: a query would fail).
	known := map[string][]change{"!a:x": {{pos: 3, value: "invite"}, {pos: 10, value: "join"}}}
	got, err = s.readerMemberships(context.Background(), "@bob:x", []*clientEvent{{roomID: "!a:x", pos: 2}, {roomID: "!a:x", pos: 4}}, known)
	if err != nil || strings.Join(got, ",") != "leave,invite" {
		t.Fatalf("memberships from a known history: %v %v", got, err)
	}
	for _, c := range []struct{ in, want string }{
		{`{"content":{},"unsigned":{"age":1}}`, `{"content":{},"unsigned":{"age":1,"membership":"join"}}`},
		{`not an event`, `not an event`},
	} {
		if out := string(appendMembership([]byte(c.in), "join")); out != c.want {
			t.Errorf("appendMembership(%s) = %s", c.in, out)
		}
	}
}
