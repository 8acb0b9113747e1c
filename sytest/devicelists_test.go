package sytest

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// mark is how many responses the syncer has received: waitForAfter looks
// only at those that come after it.
func (sy *syncer) mark() int {
	sy.mu.Lock()
	defer sy.mu.Unlock()
	return len(sy.resps)
}

// waitForAfter polls until cond holds on a response received after mark.
func (sy *syncer) waitForAfter(t *testing.T, mark int, what string, cond func(r *mautrix.RespSync) bool) {
	t.Helper()
	waitUntil(t, what, func() bool {
		sy.mu.Lock()
		resps := sy.resps[mark:]
		sy.mu.Unlock()
		for _, r := range resps {
			if cond(r) {
				return true
			}
		}
		return false
	})
}

func uploadDeviceKeys(t *testing.T, cli *mautrix.Client) testKey {
	t.Helper()
	k := newTestKey(t)
	var dk mautrix.DeviceKeys
	if err := json.Unmarshal(deviceKeysOf(t, cli, k), &dk); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UploadKeys(context.Background(), &mautrix.ReqUploadKeys{DeviceKeys: &dk}); err != nil {
		t.Fatalf("%s uploads keys: %v", cli.UserID, err)
	}
	return k
}

// TestFederationDeviceLists: a user of site A sharing a room with a user of
// site B follows B's devices and keys — the changes in /sync's
// device_lists, the keys in /keys/query (from B, then from A's cache) —
// and a query naming a server that cannot be asked reports it in failures.
func TestFederationDeviceLists(t *testing.T) {
	a, b := startSites(t)
	ctx := context.Background()
	alice := a.register(t, "alice")
	bob := b.register(t, "bob")
	aliceSync := startSyncer(t, alice)
	bobSync := startSyncer(t, bob)

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Keys across"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	bobSync.waitFor(t, "the invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room.RoomID] != nil })
	if _, err := bob.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.name}}); err != nil {
		t.Fatal(err)
	}
	aliceSync.waitFor(t, "bob's join", func(r *mautrix.RespSync) bool {
		jr := r.Rooms.Join[room.RoomID]
		if jr == nil {
			return false
		}
		for _, ev := range jr.Timeline.Events {
			if ev.Type == event.StateMember && ev.GetStateKey() == bob.UserID.String() && ev.Content.Raw["membership"] == "join" {
				return true
			}
		}
		return false
	})

	// Bob uploads device keys: alice hears of it and gets them.
	m := aliceSync.mark()
	bobKey := uploadDeviceKeys(t, bob)
	aliceSync.waitForAfter(t, m, "bob in device_lists.changed after his upload", func(r *mautrix.RespSync) bool {
		return slices.Contains(r.DeviceLists.Changed, bob.UserID)
	})
	bobDevice := func(q *mautrix.RespQueryKeys, dev id.DeviceID) string {
		if q == nil {
			return ""
		}
		return string(q.DeviceKeys[bob.UserID][dev].Keys.GetEd25519(dev))
	}
	var q *mautrix.RespQueryKeys
	waitUntil(t, "bob's keys in alice's query", func() bool {
		q, err = alice.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{bob.UserID: {}}})
		return err == nil && bobDevice(q, bob.DeviceID) == bobKey.pub
	})
	if len(q.Failures) != 0 {
		t.Fatalf("failures: %v", q.Failures)
	}

	// Bob logs in on a new device and gives it keys: alice hears of it
	// and sees both devices.
	m = aliceSync.mark()
	bob2 := b.login(t, "bob")
	aliceSync.waitForAfter(t, m, "bob in device_lists.changed after his login", func(r *mautrix.RespSync) bool {
		return slices.Contains(r.DeviceLists.Changed, bob.UserID)
	})
	bob2Key := uploadDeviceKeys(t, bob2)
	waitUntil(t, "bob's new device in alice's query", func() bool {
		q, err = alice.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{bob.UserID: {}}})
		return err == nil && bobDevice(q, bob2.DeviceID) == bob2Key.pub && bobDevice(q, bob.DeviceID) == bobKey.pub
	})

	// The new device logs out: it leaves alice's answers.
	m = aliceSync.mark()
	if _, err := bob2.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	aliceSync.waitForAfter(t, m, "bob in device_lists.changed after a logout", func(r *mautrix.RespSync) bool {
		return slices.Contains(r.DeviceLists.Changed, bob.UserID)
	})
	waitUntil(t, "bob's logged out device gone from alice's query", func() bool {
		q, err = alice.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{bob.UserID: {}}})
		return err == nil && bobDevice(q, bob2.DeviceID) == "" && bobDevice(q, bob.DeviceID) == bobKey.pub
	})

	// A server that cannot be asked is in failures; the others answer.
	start := time.Now()
	q, err = alice.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{
		bob.UserID: {}, "@nobody:localhost:1": {}}, Timeout: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := q.Failures["localhost:1"]; !ok || bobDevice(q, bob.DeviceID) != bobKey.pub {
		t.Fatalf("query with an unreachable server: failures %v, keys %v", q.Failures, q.DeviceKeys)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("the query took %v", d)
	}

	// Bob leaves: alice is told to forget his devices.
	m = aliceSync.mark()
	if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	aliceSync.waitForAfter(t, m, "bob in device_lists.left", func(r *mautrix.RespSync) bool {
		return slices.Contains(r.DeviceLists.Left, bob.UserID)
	})
}
