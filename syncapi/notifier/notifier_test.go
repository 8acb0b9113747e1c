package notifier

import (
	"context"
	"testing"
	"time"
)

// woken tells whether the listener has been signalled (it never blocks:
// the notifier signals under its lock, before the On* call returns).
func woken(l *Listener) bool {
	select {
	case <-l.Wake():
		return true
	default:
		return false
	}
}

// TestWakesExactlyWhoMustWake: each kind of commit wakes the users it
// concerns and no one else, and moves the positions HasNews samples.
func TestWakesExactlyWhoMustWake(t *testing.T) {
	for _, tc := range []struct {
		name   string
		commit func(n *Notifier)
		wake   map[string]bool // user → woken
	}{
		{"message in !a", func(n *Notifier) { n.OnRoomEvent("!a", 10, "", "", "@alice", UnreadCount) },
			map[string]bool{"@alice": true, "@bob": true}},
		{"invite of carol to !a", func(n *Notifier) { n.OnRoomEvent("!a", 10, "@carol", "invite", "@alice", UnreadNone) },
			map[string]bool{"@alice": true, "@bob": true, "@carol": true}},
		{"typing in !b", func(n *Notifier) { n.OnTyping("!b", 5) }, map[string]bool{"@carol": true, "@bob": true}},
		{"public receipt in !a", func(n *Notifier) { n.OnReceipt("!a", "@bob", false, 3) }, map[string]bool{"@alice": true, "@bob": true}},
		{"private receipt in !a", func(n *Notifier) { n.OnReceipt("!a", "@bob", true, 3) }, map[string]bool{"@bob": true}},
		{"account data of alice", func(n *Notifier) { n.OnAccountData("@alice", 4) }, map[string]bool{"@alice": true}},
		{"to-device for alice", func(n *Notifier) { n.OnToDevice("@alice", "D", 4) }, map[string]bool{"@alice": true}},
		{"presence of carol", func(n *Notifier) { n.OnPresence("@carol", 4) }, map[string]bool{"@carol": true, "@bob": true}},
		{"device list of alice", func(n *Notifier) { n.OnDeviceListChange("@alice", 4) }, map[string]bool{"@alice": true, "@bob": true}},
		{"peek of dave into !a", func(n *Notifier) { n.OnPeek("@dave", "D", "!a", 9, 1) }, map[string]bool{"@dave": true}},
		{"skip", func(n *Notifier) { n.Skipped(Pos{Events: 50}) }, map[string]bool{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := New(Pos{Events: 2})
			n.LoadMembership("!a", "@alice", "join", 1)
			n.LoadMembership("!a", "@bob", "join", 2)
			n.LoadMembership("!b", "@bob", "join", 1)
			n.LoadMembership("!b", "@carol", "join", 2)
			since := n.Current()
			ls := map[string]*Listener{}
			for _, u := range []string{"@alice", "@bob", "@carol", "@dave"} {
				ls[u] = n.Listen(u, "D")
				defer ls[u].Close()
			}
			if n.Waiting() != 4 {
				t.Fatalf("waiting %d", n.Waiting())
			}
			tc.commit(n)
			for u, l := range ls {
				if got := woken(l); got != tc.wake[u] {
					t.Errorf("%s woken: %v, want %v", u, got, tc.wake[u])
				}
				if got := n.HasNews(u, "D", since); got != tc.wake[u] {
					t.Errorf("%s has news: %v, want %v", u, got, tc.wake[u])
				}
			}
			if !n.Current().After(since) {
				t.Errorf("position did not move: %v", n.Current())
			}
		})
	}
}

// TestMembershipIndexes: the read side the streams use.
func TestMembershipIndexes(t *testing.T) {
	n := New(Pos{})
	n.LoadMembership("!a", "@alice", "join", 1)
	n.LoadMembership("!a", "@bob", "invite", 2)
	n.LoadMembership("!b", "@alice", "leave", 3)
	n.LoadMembership("!c", "@carol", "join", 4)
	if !n.Joined("@alice", "!a") || n.Joined("@bob", "!a") || n.Joined("@alice", "!b") {
		t.Error("Joined")
	}
	if joined, invited, others := n.RoomMembers("!a", "@alice"); joined != 1 || invited != 1 || len(others) != 1 || others[0] != "@bob" {
		t.Errorf("RoomMembers: %d %d %v", joined, invited, others)
	}
	if m, ok := n.MembershipOf("@alice", "!b"); !ok || m != (Membership{State: "leave", Pos: 3}) {
		t.Errorf("MembershipOf: %+v %v", m, ok)
	}
	if !n.InSomeRoom("@alice") || n.InSomeRoom("@bob") {
		t.Error("InSomeRoom")
	}
	if n.SharesRoom("@alice", "@carol") || len(n.CoMembers("@alice")) != 1 {
		t.Error("SharesRoom/CoMembers")
	}
	v := n.View("@alice")
	if len(v.Rooms) != 2 || v.Rooms[0].ID != "!a" || v.Rooms[1].Mem.State != "leave" {
		t.Errorf("View: %+v", v)
	}
}

// TestBump: a room's bump position is its latest noted bump event, never
// lowered by an older one nor shown above the room's latest event.
func TestBump(t *testing.T) {
	n := New(Pos{})
	n.LoadMembership("!a", "@alice", "join", 1)
	n.LoadRoomPos("!a", 5)
	n.NoteBump("!a", 4)
	n.NoteBump("!a", 2)
	for _, tc := range []struct {
		name         string
		apply        func()
		bump, events int64
	}{
		{"loaded", func() {}, 4, 5},
		{"a state event", func() { n.OnRoomEvent("!a", 6, "", "", "@alice", UnreadNone) }, 4, 6},
		{"noted before its event", func() { n.NoteBump("!a", 7) }, 6, 6},
		{"its event", func() { n.OnRoomEvent("!a", 7, "", "", "@alice", UnreadCount) }, 7, 7},
	} {
		tc.apply()
		rv := n.View("@alice").Rooms[0]
		if rv.Bump != tc.bump || rv.Events != tc.events {
			t.Errorf("%s: bump %d, events %d; want %d, %d", tc.name, rv.Bump, rv.Events, tc.bump, tc.events)
		}
	}
}

// poll is a long-poll over a notifier for the Waiter tests: news after
// pos for the user, answered with the position it answers up to.
type poll struct {
	n   *Notifier
	pos Pos
}

func (p *poll) News() bool { return p.n.HasNews("@alice", "D", p.pos) }
func (p *poll) Answer(_ context.Context, force bool) (string, bool, error) {
	cur := p.n.Current()
	if !force && !cur.After(p.pos) {
		return "", false, nil
	}
	p.pos = cur
	return cur.String(), true, nil
}
func (p *poll) Empty(context.Context) (string, error) { return "empty", nil }

// TestWaiter: subscribe, then sample, then wait — a commit after Start
// wakes a waiting and a parked poll; a poll with news answers at once.
func TestWaiter(t *testing.T) {
	ctx := context.Background()
	n := New(Pos{})
	n.LoadMembership("!a", "@alice", "join", 1)
	p := &poll{n: n}
	resp, w, err := Start[string](ctx, n, "@alice", "D", time.Hour, p, nil)
	if err != nil || w == nil || resp != "" {
		t.Fatalf("start with nothing new: %q %v %v", resp, w, err)
	}
	n.OnRoomEvent("!a", 2, "", "", "@bob", UnreadCount)
	if resp, err := w.Wait(ctx); err != nil || resp != "s2_0_0_0_0_0_0_0" {
		t.Fatalf("woken: %q %v", resp, err)
	}
	// News before Start: answered at once, no waiter.
	n.OnAccountData("@alice", 1)
	if resp, w, err := Start[string](ctx, n, "@alice", "D", time.Hour, p, nil); err != nil || w != nil || resp != "s2_0_1_0_0_0_0_0" {
		t.Fatalf("at once: %q %v %v", resp, w, err)
	}
	// Parked: the answer comes on a goroutine of its own.
	_, w, _ = Start[string](ctx, n, "@alice", "D", time.Hour, p, nil)
	got := make(chan string, 1)
	w.Park(ctx, func(resp string, err error) { got <- resp })
	n.OnTyping("!a", 7)
	if resp := <-got; resp != "s2_0_1_7_0_0_0_0" {
		t.Fatalf("parked: %q", resp)
	}
	// Cancel answers empty.
	_, w, _ = Start[string](ctx, n, "@alice", "D", time.Hour, p, nil)
	w.Park(ctx, func(resp string, err error) { got <- resp })
	w.Cancel()
	if resp := <-got; resp != "empty" {
		t.Fatalf("cancelled: %q", resp)
	}
	// A zero timeout answers at once, news or not.
	if resp, w, err := Start[string](ctx, n, "@alice", "D", 0, p, nil); err != nil || w != nil || resp == "" {
		t.Fatalf("no timeout: %q %v %v", resp, w, err)
	}
	for n.Waiting() != 0 {
		time.Sleep(time.Millisecond) // the cancelled waiter's goroutine closes its listener
	}
}
