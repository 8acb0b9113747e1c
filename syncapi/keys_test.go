package syncapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/syncapi"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/keys"
)

type keysWorld struct {
	world
	keys *keys.Service
}

func newKeysWorld(t *testing.T, d storage.Dialect) *keysWorld { return newKeysWorldTB(t, d) }

func newKeysWorldTB(t testing.TB, d storage.Dialect) *keysWorld {
	t.Helper()
	w, ks := worldOn(t, storagetest.Open(t, d), true)
	return &keysWorld{world: *w, keys: ks}
}

// settleKeys waits until the sync engine has seen every committed change.
func (w *keysWorld) settleKeys() {
	w.settle()
	for {
		cur := w.sync.Notifier().Current()
		if cur.ToDevice >= w.keys.ToDevicePosition() && cur.DeviceLists >= w.keys.DeviceListPosition() {
			return
		}
		runtime.Gosched()
	}
}

func (w *keysWorld) register(t *testing.T, name, device string) string {
	t.Helper()
	sess, err := w.users.Register(context.Background(), userapi.RegisterRequest{Localpart: name, Password: "password-" + name, DeviceID: device})
	if err != nil {
		t.Fatal(err)
	}
	return sess.UserID
}

func (w *keysWorld) syncOnce(t *testing.T, user, device, since string, timeout time.Duration) *syncapi.Response {
	t.Helper()
	r, err := w.sync.Sync(context.Background(), syncapi.SyncRequest{UserID: user, DeviceID: device, Since: since, Timeout: timeout, Opts: lazyOpts()})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSyncKeys(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			ctx := context.Background()
			w := newKeysWorld(t, d)
			alice, bob, carol := w.register(t, "alice", "A1"), w.register(t, "bob", "B1"), w.register(t, "carol", "C1")
			res, err := w.rooms.CreateRoom(ctx, alice, roomserver.CreateRoomRequest{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.rooms.Join(ctx, bob, res.RoomID, ""); err != nil {
				t.Fatal(err)
			}
			w.settleKeys()
			first := w.syncOnce(t, bob, "B1", "", 0)
			if first.OTKCounts["signed_curve25519"] != 0 || first.FallbackKeyTypes == nil {
				t.Fatalf("key counts missing: %v %v", first.OTKCounts, first.FallbackKeyTypes)
			}

			// Alice's new keys: bob hears of it and sees them counted in her syncs.
			dk := json.RawMessage(`{"user_id":"` + alice + `","device_id":"A1","algorithms":["m.megolm.v1.aes-sha2"],"keys":{"ed25519:A1":"ed","curve25519:A1":"cu"},"signatures":{}}`)
			if _, err := w.keys.Upload(ctx, alice, "A1", keys.UploadRequest{DeviceKeys: dk,
				OneTimeKeys:  map[string]json.RawMessage{"signed_curve25519:1": json.RawMessage(`{"key":"k1"}`)},
				FallbackKeys: map[string]json.RawMessage{"signed_curve25519:f": json.RawMessage(`{"key":"f"}`)}}); err != nil {
				t.Fatal(err)
			}
			r := w.syncOnce(t, bob, "B1", first.NextBatch, 5*time.Second)
			if !slices.Contains(r.DeviceLists.Changed, alice) {
				t.Fatalf("device_lists %+v", r.DeviceLists)
			}
			a := w.syncOnce(t, alice, "A1", "", 0)
			if a.OTKCounts["signed_curve25519"] != 1 || !slices.Equal(a.FallbackKeyTypes, []string{"signed_curve25519"}) {
				t.Fatalf("alice's counts %v %v", a.OTKCounts, a.FallbackKeyTypes)
			}

			// A to-device message wakes bob's waiting sync and is kept until acknowledged.
			done := make(chan *syncapi.Response, 1)
			go func() {
				r, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: bob, DeviceID: "B1", Since: r.NextBatch, Timeout: time.Minute, Opts: lazyOpts()})
				if err != nil {
					t.Error(err)
				}
				done <- r
			}()
			for !w.sync.Notifier().HasListener(bob) {
				time.Sleep(time.Millisecond)
			}
			if err := w.keys.SendToDevice(ctx, alice, "A1", "m.test", "t1", map[string]map[string]json.RawMessage{bob: {"*": json.RawMessage(`{"hello":1}`)}}); err != nil {
				t.Fatal(err)
			}
			var got *syncapi.Response
			select {
			case got = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the to-device message did not wake bob")
			}
			if len(got.ToDevice.Events) != 1 || got.ToDevice.Events[0] == nil || got.OTKCounts["signed_curve25519"] != 0 {
				t.Fatalf("to-device %s, counts %v", got.ToDevice.Events, got.OTKCounts)
			}
			up := w.keys.ToDevicePosition()
			if evs, _, _ := w.keys.ToDeviceMessages(ctx, bob, "B1", 0, up, 10); len(evs) != 1 {
				t.Fatal("the message is gone before bob acknowledged it")
			}
			// The next sync acknowledges; an idle wait afterwards runs no query.
			r = w.syncOnce(t, bob, "B1", got.NextBatch, 0)
			if err := w.keys.FlushAcks(ctx); err != nil {
				t.Fatal(err)
			}
			if evs, _, _ := w.keys.ToDeviceMessages(ctx, bob, "B1", 0, up, 10); len(evs) != 0 {
				t.Fatal("the acknowledged message is still stored")
			}
			before := storage.Queries.Load()
			idle := w.syncOnce(t, bob, "B1", r.NextBatch, 200*time.Millisecond)
			if n := storage.Queries.Load() - before; n != 0 {
				t.Fatalf("an idle sync ran %d queries", n)
			}
			if idle.OTKCounts["signed_curve25519"] != 0 || idle.FallbackKeyTypes == nil {
				t.Fatalf("an idle answer lacks the key counts: %v %v", idle.OTKCounts, idle.FallbackKeyTypes)
			}

			// More than one response's worth of messages arrives over two syncs.
			msgs := map[string]map[string]json.RawMessage{bob: {"B1": json.RawMessage(`{}`)}}
			for i := 0; i < syncapi.ToDeviceLimit+20; i++ {
				if err := w.keys.SendToDevice(ctx, alice, "A1", "m.test", fmt.Sprint("bulk", i), msgs); err != nil {
					t.Fatal(err)
				}
			}
			w.settleKeys()
			r1 := w.syncOnce(t, bob, "B1", idle.NextBatch, 0)
			r2 := w.syncOnce(t, bob, "B1", r1.NextBatch, 0)
			if len(r1.ToDevice.Events) != syncapi.ToDeviceLimit || len(r2.ToDevice.Events) != 20 {
				t.Fatalf("delivered %d then %d", len(r1.ToDevice.Events), len(r2.ToDevice.Events))
			}

			// Carol joins: bob must track her devices; she leaves: he may stop.
			if _, err := w.rooms.Join(ctx, carol, res.RoomID, ""); err != nil {
				t.Fatal(err)
			}
			w.settleKeys()
			r = w.syncOnce(t, bob, "B1", r2.NextBatch, 0)
			if !slices.Contains(r.DeviceLists.Changed, carol) {
				t.Fatalf("after carol's join: %+v", r.DeviceLists)
			}
			if err := w.rooms.Leave(ctx, carol, res.RoomID, ""); err != nil {
				t.Fatal(err)
			}
			w.settleKeys()
			r = w.syncOnce(t, bob, "B1", r.NextBatch, 0)
			if !slices.Contains(r.DeviceLists.Left, carol) || slices.Contains(r.DeviceLists.Changed, carol) {
				t.Fatalf("after carol's leave: %+v", r.DeviceLists)
			}
			// Bob joins a room of carol's: he must track her; he leaves it: he may stop.
			cres, err := w.rooms.CreateRoom(ctx, carol, roomserver.CreateRoomRequest{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			w.settleKeys()
			r = w.syncOnce(t, bob, "B1", r.NextBatch, 0)
			if _, err := w.rooms.Join(ctx, bob, cres.RoomID, ""); err != nil {
				t.Fatal(err)
			}
			w.settleKeys()
			r = w.syncOnce(t, bob, "B1", r.NextBatch, 0)
			if !slices.Contains(r.DeviceLists.Changed, carol) || !slices.Contains(r.DeviceLists.Changed, bob) {
				t.Fatalf("after bob's join: %+v", r.DeviceLists)
			}
			if err := w.rooms.Leave(ctx, bob, cres.RoomID, ""); err != nil {
				t.Fatal(err)
			}
			w.settleKeys()
			r = w.syncOnce(t, bob, "B1", r.NextBatch, 0)
			if !slices.Contains(r.DeviceLists.Left, carol) || slices.Contains(r.DeviceLists.Left, bob) || slices.Contains(r.DeviceLists.Left, alice) {
				t.Fatalf("after bob's leave: %+v", r.DeviceLists)
			}

			changed, left, err := w.sync.KeyChanges(ctx, bob, first.NextBatch, "")
			if err != nil || !slices.Contains(changed, alice) || !slices.Contains(left, carol) {
				t.Fatalf("keys/changes: %v %v %v", changed, left, err)
			}

			// Deleting bob's device drops his queue.
			if err := w.keys.SendToDevice(ctx, alice, "A1", "m.test", "last", msgs); err != nil {
				t.Fatal(err)
			}
			if err := w.users.DeleteDevices(ctx, bob, []string{"B1"}); err != nil {
				t.Fatal(err)
			}
			if evs, _, _ := w.keys.ToDeviceMessages(ctx, bob, "B1", 0, w.keys.ToDevicePosition(), 10); len(evs) != 0 {
				t.Fatal("a deleted device's queue is kept")
			}
		})
	}
}

// BenchmarkToDeviceFanout100 measures a to-device send to 100 devices, each
// with a waiting /sync, until all 100 have their answer (a room key shared
// with a room of 100). ms/fanout is the time from the send to the last answer.
func BenchmarkToDeviceFanout100(b *testing.B) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		b.Run(d.String(), func(b *testing.B) {
			ctx := context.Background()
			w := newKeysWorldTB(b, d)
			const n = 100
			users := make([]string, n)
			tokens := make([]string, n)
			msgs := map[string]map[string]json.RawMessage{}
			for i := range users {
				sess, err := w.users.Register(ctx, userapi.RegisterRequest{Localpart: fmt.Sprintf("u%d", i), Password: "password", DeviceID: "D"})
				if err != nil {
					b.Fatal(err)
				}
				users[i] = sess.UserID
				msgs[sess.UserID] = map[string]json.RawMessage{"D": json.RawMessage(`{"algorithm":"m.olm.v1.curve25519-aes-sha2","ciphertext":{}}`)}
			}
			w.settleKeys()
			for i, u := range users {
				r, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: u, DeviceID: "D", Opts: lazyOpts()})
				if err != nil {
					b.Fatal(err)
				}
				tokens[i] = r.NextBatch
			}
			var total time.Duration
			b.ResetTimer()
			for it := 0; it < b.N; it++ {
				b.StopTimer()
				done := make(chan *syncapi.Response, n)
				for i, u := range users {
					go func(i int, u string) {
						r, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: u, DeviceID: "D", Since: tokens[i], Timeout: 30 * time.Second, Opts: lazyOpts()})
						if err != nil {
							b.Error(err)
						}
						done <- r
						if r != nil {
							tokens[i] = r.NextBatch
						}
					}(i, u)
				}
				for w.sync.Notifier().Waiting() < n {
					time.Sleep(100 * time.Microsecond)
				}
				b.StartTimer()
				start := time.Now()
				if err := w.keys.SendToDevice(ctx, users[0], "D", "m.room.encrypted", fmt.Sprint("fan", it), msgs); err != nil {
					b.Fatal(err)
				}
				for i := 0; i < n; i++ {
					if r := <-done; r == nil || len(r.ToDevice.Events) != 1 {
						b.Fatalf("a device got %v", r)
					}
				}
				total += time.Since(start)
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/fanout")
		})
	}
}
