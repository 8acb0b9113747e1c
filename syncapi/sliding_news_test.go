package syncapi

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/haven-chat/haven/syncapi/notifier"
	"github.com/haven-chat/haven/syncapi/streams"
)

// newsKeys stands for the key service: slidingNews only asks whether
// there is one.
type newsKeys struct{ KeySource }

// TestSlidingNews: a sliding sync long-poll wakes (builds) for what may
// concern its connection, not for every commit that concerns the user.
// @me is in !in (in the window: the client has it), !out (outside the
// window) and !sub (not sent, but subscribed to).
func TestSlidingNews(t *testing.T) {
	const me, other = "@me:x", "@other:x"
	type setup struct {
		n  *notifier.Notifier
		dl *streams.DeviceLists
	}
	on := func(ext, lists string) string {
		return `{"lists":{"all":{"ranges":[[0,0]],"timeline_limit":1` + lists + `}},"room_subscriptions":{"!sub:x":{"timeline_limit":1}},"extensions":{` + ext + `}}`
	}
	// roomEvent applies a room event as applyRoomEvent does.
	roomEvent := func(x setup, room string, pos int64, typ, target, membership string) {
		if slidingBumps(typ) {
			x.n.NoteBump(room, pos)
		}
		if target != "" {
			x.dl.NoteMembership(room, pos)
		}
		x.n.OnRoomEvent(room, pos, target, membership, other, notifier.UnreadNone)
	}
	cases := []struct {
		name string
		body string
		do   func(x setup)
		want bool
	}{
		{"nothing", on(``, ``), func(setup) {}, false},
		{"message outside the window (bump)", on(``, ``), func(x setup) { roomEvent(x, "!out:x", 21, "m.room.message", "", "") }, true},
		{"state event outside the window", on(``, ``), func(x setup) { roomEvent(x, "!out:x", 21, "m.room.topic", "", "") }, false},
		{"reaction outside the window", on(``, ``), func(x setup) { roomEvent(x, "!out:x", 21, "m.reaction", "", "") }, false},
		{"state event in the window", on(``, ``), func(x setup) { roomEvent(x, "!in:x", 21, "m.room.topic", "", "") }, true},
		{"reaction in the window", on(``, ``), func(x setup) { roomEvent(x, "!in:x", 21, "m.reaction", "", "") }, true},
		{"state event in a subscription", on(``, ``), func(x setup) { roomEvent(x, "!sub:x", 21, "m.room.topic", "", "") }, true},
		{"someone joins outside the window", on(``, ``), func(x setup) { roomEvent(x, "!out:x", 21, "m.room.member", "@new:x", "join") }, false},
		{"someone joins outside the window, e2ee", on(`"e2ee":{"enabled":true}`, ``), func(x setup) { roomEvent(x, "!out:x", 21, "m.room.member", "@new:x", "join") }, true},
		{"state event outside the window, e2ee", on(`"e2ee":{"enabled":true}`, ``), func(x setup) { roomEvent(x, "!out:x", 21, "m.room.topic", "", "") }, false},
		{"state event outside the window, is_encrypted list", on(``, `,"filters":{"is_encrypted":true}`), func(x setup) { roomEvent(x, "!out:x", 21, "m.room.encryption", "", "") }, true},
		{"invited", on(``, ``), func(x setup) { roomEvent(x, "!new:x", 21, "m.room.member", me, "invite") }, true},
		{"left a room outside the window", on(``, ``), func(x setup) { roomEvent(x, "!out:x", 21, "m.room.member", me, "leave") }, true},
		{"message in a room the user is not in", on(``, ``), func(x setup) { roomEvent(x, "!else:x", 21, "m.room.message", "", "") }, false},
		{"receipt in the window", on(`"receipts":{"enabled":true}`, ``), func(x setup) { x.n.OnReceipt("!in:x", other, false, 5) }, true},
		{"receipt in the window, not asked for (it may move the unread counts)", on(``, ``), func(x setup) { x.n.OnReceipt("!in:x", other, false, 5) }, true},
		{"receipt outside the window", on(`"receipts":{"enabled":true}`, ``), func(x setup) { x.n.OnReceipt("!out:x", other, false, 5) }, false},
		{"typing in the window", on(`"typing":{"enabled":true}`, ``), func(x setup) { x.n.OnTyping("!in:x", 5) }, true},
		{"typing outside the window", on(`"typing":{"enabled":true}`, ``), func(x setup) { x.n.OnTyping("!out:x", 5) }, false},
		{"to-device", on(`"to_device":{"enabled":true}`, ``), func(x setup) { x.n.OnToDevice(me, "D", 5) }, true},
		{"to-device, not asked for", on(``, ``), func(x setup) { x.n.OnToDevice(me, "D", 5) }, false},
		{"to-device for another device", on(`"to_device":{"enabled":true}`, ``), func(x setup) { x.n.OnToDevice(me, "E", 5) }, false},
		{"account data", on(`"account_data":{"enabled":true}`, ``), func(x setup) { x.n.OnAccountData(me, 5) }, true},
		{"account data, not asked for", on(``, ``), func(x setup) { x.n.OnAccountData(me, 5) }, false},
		{"account data, is_dm list", on(``, `,"filters":{"is_dm":true}`), func(x setup) { x.n.OnAccountData(me, 5) }, true},
		{"device list change", on(`"e2ee":{"enabled":true}`, ``), func(x setup) { x.n.OnDeviceListChange(other, 5) }, true},
		{"device list change, not asked for", on(``, ``), func(x setup) { x.n.OnDeviceListChange(other, 5) }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := setup{n: notifier.New(Pos{Events: 20, Receipts: 4, Typing: 4, ToDevice: 4, AccountData: 4, DeviceLists: 4}), dl: streams.NewDeviceLists(nil)}
			if err := x.dl.Load(context.Background(), nil, 20); err != nil {
				t.Fatal(err)
			}
			for i, r := range []string{"!in:x", "!out:x", "!sub:x"} {
				x.n.LoadMembership(r, me, "join", int64(i+1))
				x.n.LoadMembership(r, other, "join", int64(i+1))
				x.n.LoadRoomPos(r, int64(10+i))
			}
			x.n.LoadMembership("!else:x", other, "join", 4)
			s := &Service{n: x.n, deviceLists: x.dl, opts: Options{Keys: newsKeys{}}}
			req := SlidingRequest{UserID: me, DeviceID: "D"}
			if err := json.Unmarshal([]byte(c.body), &req.Body); err != nil {
				t.Fatal(err)
			}
			snap := &slidingSnap{at: x.n.Current(), sent: map[string]slidingSent{"!in:x": {pos: 10}}}
			p := &slidingPoll{s: s, req: req, snap: snap, cur: snap.at}
			if p.News() {
				t.Fatal("news before anything happened")
			}
			if old := (&slidingPoll{s: s, req: req, snap: snap, cur: Pos{Events: 19}}); !old.News() {
				t.Fatal("no news from before the start, where the notifier knows nothing")
			}
			c.do(x)
			if got := p.News(); got != c.want {
				t.Errorf("News() = %v, want %v", got, c.want)
			}
		})
	}
}
