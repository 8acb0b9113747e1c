package streams

import (
	"encoding/json"
	"strings"
	"testing"
)

type rooms map[string][]string // room → members

func (r rooms) Members(room string) []string { return r[room] }
func (r rooms) CoMembers(user string) []string {
	seen := map[string]bool{user: true}
	out := []string{user}
	for _, ms := range r {
		in := false
		for _, m := range ms {
			in = in || m == user
		}
		for _, m := range ms {
			if in && !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	return out
}

// TestPresenceChanges: the window's changes of the user and the users
// who share a room with them, and everyone of a room new to the client.
func TestPresenceChanges(t *testing.T) {
	p := NewPresence()
	for _, e := range []PresenceNotice{
		{UserID: "@alice", Presence: "online", Pos: 1, LastActive: 900},
		{UserID: "@bob", Presence: "unavailable", Pos: 5, StatusMsg: "away"},
		{UserID: "@carol", Presence: "online", Pos: 2},
		{UserID: "@dave", Presence: "online", Pos: 7},
	} {
		p.Put(e)
	}
	p.Apply(PresenceNotice{UserID: "@alice", Presence: "offline", Pos: 0}) // older: ignored
	rs := rooms{"!a": {"@alice", "@bob"}, "!b": {"@alice", "@carol"}, "!c": {"@dave"}}
	for _, tc := range []struct {
		name        string
		after, upto int64
		whole       []string
		wantSenders string
	}{
		{"initial", 0, 10, nil, "@alice,@bob,@carol"},
		{"incremental", 2, 10, nil, "@bob"},
		{"up to", 0, 1, nil, "@alice"},
		{"room new to the client", 4, 10, []string{"!b"}, "@alice,@bob,@carol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var senders []string
			for _, ev := range p.Changes(rs, "@alice", tc.after, tc.upto, tc.whole, 1000) {
				var e struct {
					Sender string `json:"sender"`
				}
				if err := json.Unmarshal(ev, &e); err != nil {
					t.Fatal(err)
				}
				senders = append(senders, e.Sender)
			}
			if got := strings.Join(senders, ","); got != tc.wantSenders {
				t.Errorf("senders %s, want %s", got, tc.wantSenders)
			}
		})
	}
	if ev := string(PresenceEvent("@alice", p.Get("@alice"), 1000)); ev != `{"type":"m.presence","sender":"@alice","content":{"presence":"online","last_active_ago":100,"currently_active":true}}` {
		t.Errorf("event %s", ev)
	}
	if touched, _ := p.Touch("@bob", "unavailable", nil, 2000); !touched || p.Get("@bob").LastActive != 2000 {
		t.Error("touch with the same presence and status")
	}
	if touched, msg := p.Touch("@bob", "online", nil, 3000); touched || msg != "away" {
		t.Errorf("touch with another presence: %v %q", touched, msg)
	}
}
