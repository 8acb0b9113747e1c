package keys

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// fakeFetcher plays the other servers.
type fakeFetcher struct {
	mu      sync.Mutex
	lists   map[string]*UserDevices // by user
	down    map[string]bool         // servers that refuse
	slow    map[string]bool         // servers that never answer
	queries atomic.Int32
	resyncs atomic.Int32
}

func (f *fakeFetcher) UserDevices(ctx context.Context, userID string) (*UserDevices, error) {
	f.resyncs.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.lists[userID]
	if !ok {
		return nil, merr.NotFound("no such user")
	}
	cp := *l
	return &cp, nil
}

func (f *fakeFetcher) QueryKeys(ctx context.Context, server string, want map[string][]string) (*ServerQueryResponse, error) {
	f.queries.Add(1)
	f.mu.Lock()
	down, slow := f.down[server], f.slow[server]
	f.mu.Unlock()
	if slow {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if down {
		return nil, merr.Custom(http.StatusBadGateway, "M_UNKNOWN", "Could not reach %s", server)
	}
	out := &ServerQueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{}, SelfSigningKeys: map[string]json.RawMessage{}}
	f.mu.Lock()
	defer f.mu.Unlock()
	for u := range want {
		l, ok := f.lists[u]
		if !ok {
			continue
		}
		devs := map[string]json.RawMessage{}
		for _, d := range l.Devices {
			if d.Keys != nil {
				devs[d.DeviceID] = withSignatures(string(d.Keys), nil, map[string]any{"device_display_name": d.DisplayName})
			}
		}
		out.DeviceKeys[u] = devs
		if l.MasterKey != nil {
			out.MasterKeys[u] = l.MasterKey
		}
	}
	return out, nil
}

func (f *fakeFetcher) set(l *UserDevices) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists[l.UserID] = l
}

// fakeRooms says who shares a room with the users of "x".
type fakeRooms struct {
	mu      sync.Mutex
	shared  map[string]bool
	members map[string][]string
}

func (r *fakeRooms) SharesRoomWithServer(_ context.Context, userID, server string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.shared[userID], nil
}

func (r *fakeRooms) JoinedUsers(_ context.Context, roomID string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.members[roomID], nil
}

func (r *fakeRooms) share(userID string, yes bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.shared[userID] = yes
}

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func newTestRemote(t testing.TB, db *storage.DB) (*Service, *Remote, *fakeFetcher, *fakeRooms, *fakeBus) {
	t.Helper()
	bus := &fakeBus{}
	s, err := New(context.Background(), db, bus, Options{ServerName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	f := &fakeFetcher{lists: map[string]*UserDevices{}, down: map[string]bool{}, slow: map[string]bool{}}
	rooms := &fakeRooms{shared: map[string]bool{}, members: map[string][]string{}}
	r := NewRemote(s, f, rooms, quietLog())
	t.Cleanup(r.Close)
	return s, r, f, rooms, bus
}

func remoteDevice(user, device, name string) UserDevice {
	return UserDevice{DeviceID: device, DisplayName: name, Keys: deviceKeysJSON(user, device, "ed-"+device, "curve-"+device)}
}

func masterKeyJSON(user, pub string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"user_id": user, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + pub: pub}})
	return b
}

func queryDevices(t *testing.T, r *Remote, users ...string) *QueryResponse {
	t.Helper()
	want := map[string][]string{}
	for _, u := range users {
		want[u] = nil
	}
	resp, err := r.Query(context.Background(), "@a:x", want, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRemoteQueryCachesSharedUsers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		_, r, f, rooms, _ := newTestRemote(t, db)
		f.set(&UserDevices{UserID: "@b:y", StreamID: 3, Devices: []UserDevice{remoteDevice("@b:y", "B1", "phone")}, MasterKey: masterKeyJSON("@b:y", "M")})
		f.set(&UserDevices{UserID: "@c:y", Devices: []UserDevice{remoteDevice("@c:y", "C1", "")}})
		rooms.share("@b:y", true)

		resp := queryDevices(t, r, "@b:y", "@c:y")
		if _, ok := resp.DeviceKeys["@b:y"]["B1"]; !ok || resp.DeviceKeys["@c:y"]["C1"] == nil || resp.MasterKeys["@b:y"] == nil || len(resp.Failures) != 0 {
			t.Fatalf("cold answer: %+v", resp)
		}
		var dk struct {
			Unsigned struct {
				Name string `json:"device_display_name"`
			} `json:"unsigned"`
		}
		_ = json.Unmarshal(resp.DeviceKeys["@b:y"]["B1"], &dk)
		if dk.Unsigned.Name != "phone" {
			t.Fatalf("device name: %s", resp.DeviceKeys["@b:y"]["B1"])
		}
		if n := f.queries.Load(); n != 1 {
			t.Fatalf("%d queries for one server", n)
		}
		// @b:y shares a room: answered from the cache now; @c:y does not.
		resp = queryDevices(t, r, "@b:y")
		if resp.DeviceKeys["@b:y"]["B1"] == nil || resp.MasterKeys["@b:y"] == nil || f.queries.Load() != 1 {
			t.Fatalf("warm answer: %+v (queries %d)", resp, f.queries.Load())
		}
		_ = json.Unmarshal(resp.DeviceKeys["@b:y"]["B1"], &dk)
		if dk.Unsigned.Name != "phone" {
			t.Fatalf("cached device name: %s", resp.DeviceKeys["@b:y"]["B1"])
		}
		queryDevices(t, r, "@c:y")
		if f.queries.Load() != 2 {
			t.Fatalf("a user sharing no room was cached")
		}
		// Asking for one device only: only that one.
		resp, err := r.Query(context.Background(), "@a:x", map[string][]string{"@b:y": {"NOPE"}}, 0)
		if err != nil || len(resp.DeviceKeys["@b:y"]) != 0 {
			t.Fatalf("one device: %+v %v", resp, err)
		}
	})
}

func TestRemoteQueryFailures(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		_, r, f, _, _ := newTestRemote(t, db)
		f.set(&UserDevices{UserID: "@b:y", Devices: []UserDevice{remoteDevice("@b:y", "B1", "")}})
		f.down["z"], f.slow["slow"] = true, true
		start := time.Now()
		resp, err := r.Query(context.Background(), "@a:x", map[string][]string{"@b:y": nil, "@c:z": nil, "@d:slow": nil, "@a:x": nil}, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the timeout was not kept: %v", time.Since(start))
		}
		var fz, fs struct {
			Status int `json:"status"`
		}
		_ = json.Unmarshal(resp.Failures["z"], &fz)
		_ = json.Unmarshal(resp.Failures["slow"], &fs)
		if fz.Status != http.StatusBadGateway || fs.Status != http.StatusGatewayTimeout || resp.DeviceKeys["@b:y"]["B1"] == nil {
			t.Fatalf("answer: %+v", resp)
		}
		if _, ok := resp.DeviceKeys["@a:x"]; !ok {
			t.Fatalf("the local user is missing: %+v", resp)
		}
		if _, err := r.Query(context.Background(), "@a:x", map[string][]string{"not-a-user": nil}, 0); !merr.Is(err, "M_INVALID_PARAM") {
			t.Fatalf("bad user ID: %v", err)
		}
	})
}

func TestRemoteDeviceListUpdates(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, r, f, rooms, bus := newTestRemote(t, db)
		f.set(&UserDevices{UserID: "@b:y", Devices: []UserDevice{remoteDevice("@b:y", "B1", "")}})
		rooms.share("@b:y", true)
		queryDevices(t, r, "@b:y") // tracked from here, stream 0
		notices := bus.count(TopicDeviceLists)

		// The origin must be the user's server.
		if err := r.DeviceListUpdate(ctx, "z", DeviceListUpdate{UserID: "@b:y", DeviceID: "B2", StreamID: 1}); !merr.Is(err, "M_FORBIDDEN") {
			t.Fatalf("foreign origin: %v", err)
		}
		if err := r.DeviceListUpdate(ctx, "y", DeviceListUpdate{UserID: "@b:y", DeviceID: "B2", StreamID: 1, Keys: deviceKeysJSON("@b:y", "OTHER", "e", "c")}); !merr.Is(err, "M_INVALID_PARAM") {
			t.Fatalf("keys of another device: %v", err)
		}
		// A new device, then the first one deleted.
		if err := r.DeviceListUpdate(ctx, "y", DeviceListUpdate{UserID: "@b:y", DeviceID: "B2", DisplayName: "laptop", StreamID: 5, PrevID: []int64{}, Keys: deviceKeysJSON("@b:y", "B2", "e2", "c2")}); err != nil {
			t.Fatal(err)
		}
		if err := r.DeviceListUpdate(ctx, "y", DeviceListUpdate{UserID: "@b:y", DeviceID: "B1", StreamID: 6, PrevID: []int64{5}, Deleted: true}); err != nil {
			t.Fatal(err)
		}
		resp := queryDevices(t, r, "@b:y")
		if resp.DeviceKeys["@b:y"]["B2"] == nil || resp.DeviceKeys["@b:y"]["B1"] != nil || f.queries.Load() != 1 {
			t.Fatalf("after the updates: %+v", resp.DeviceKeys)
		}
		if n := bus.count(TopicDeviceLists); n != notices+2 {
			t.Fatalf("%d device list notices for 2 updates", n-notices)
		}
		// A repeated (old) update changes nothing.
		if err := r.DeviceListUpdate(ctx, "y", DeviceListUpdate{UserID: "@b:y", DeviceID: "B1", StreamID: 5, Keys: deviceKeysJSON("@b:y", "B1", "e", "c")}); err != nil {
			t.Fatal(err)
		}
		if bus.count(TopicDeviceLists) != notices+2 {
			t.Fatal("an old update was applied")
		}
		// A gap: the list is refetched.
		f.set(&UserDevices{UserID: "@b:y", StreamID: 9, Devices: []UserDevice{remoteDevice("@b:y", "B3", "")}, MasterKey: masterKeyJSON("@b:y", "M")})
		if err := r.DeviceListUpdate(ctx, "y", DeviceListUpdate{UserID: "@b:y", DeviceID: "B4", StreamID: 8, PrevID: []int64{7}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the refetched list", func() bool {
			stream, stale, tracked, err := listState(ctx, db, "@b:y")
			return err == nil && tracked && !stale && stream == 9
		})
		resp = queryDevices(t, r, "@b:y")
		if len(resp.DeviceKeys["@b:y"]) != 1 || resp.DeviceKeys["@b:y"]["B3"] == nil || resp.MasterKeys["@b:y"] == nil {
			t.Fatalf("after the refetch: %+v", resp)
		}
		// A cross-signing key update.
		if err := r.SigningKeyUpdate(ctx, "y", SigningKeyUpdate{UserID: "@b:y", MasterKey: masterKeyJSON("@b:y", "M2")}); err != nil {
			t.Fatal(err)
		}
		resp = queryDevices(t, r, "@b:y")
		if string(resp.MasterKeys["@b:y"]) != string(masterKeyJSON("@b:y", "M2")) {
			t.Fatalf("master key: %s", resp.MasterKeys["@b:y"])
		}
		if err := r.SigningKeyUpdate(ctx, "y", SigningKeyUpdate{UserID: "@b:y", MasterKey: masterKeyJSON("@c:y", "M3")}); !merr.Is(err, "M_INVALID_PARAM") {
			t.Fatalf("a key of another user: %v", err)
		}

		// An update of a user sharing a room but not tracked starts
		// tracking; one of a user sharing none is dropped.
		f.set(&UserDevices{UserID: "@e:y", StreamID: 4, Devices: []UserDevice{remoteDevice("@e:y", "E1", "")}})
		rooms.share("@e:y", true)
		if err := r.DeviceListUpdate(ctx, "y", DeviceListUpdate{UserID: "@e:y", DeviceID: "E1", StreamID: 4, PrevID: []int64{3}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "@e:y tracked", func() bool {
			stream, stale, tracked, _ := listState(ctx, db, "@e:y")
			return tracked && !stale && stream == 4
		})
		if err := r.DeviceListUpdate(ctx, "y", DeviceListUpdate{UserID: "@f:y", DeviceID: "F1", StreamID: 4}); err != nil {
			t.Fatal(err)
		}
		if _, _, tracked, _ := listState(ctx, db, "@f:y"); tracked {
			t.Fatal("a user sharing no room is tracked")
		}

		// @b:y leaves the last shared room: the cache is dropped.
		rooms.share("@b:y", false)
		leave, _ := json.Marshal(map[string]any{"room_id": "!r:x", "type": "m.room.member", "state_key": "@b:y", "membership": "leave"})
		r.onRoomEvent(leave)
		if _, _, tracked, _ := listState(ctx, db, "@b:y"); tracked {
			t.Fatal("still tracked after the leave")
		}
		var n int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM remote_device_keys WHERE user_id = '@b:y'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("cached devices left: %d %v", n, err)
		}
		// One of ours leaves a room: its remote members are checked.
		rooms.share("@e:y", false)
		rooms.members["!r2:x"] = []string{"@a:x", "@e:y"}
		leave, _ = json.Marshal(map[string]any{"room_id": "!r2:x", "type": "m.room.member", "state_key": "@z:x", "membership": "leave"})
		r.onRoomEvent(leave)
		if _, _, tracked, _ := listState(ctx, db, "@e:y"); tracked {
			t.Fatal("still tracked after our user left")
		}
		_ = s
	})
}

func TestLocalDevicesForServers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, bus := newTestService(t, db)
		addDevice(t, db, "@a:x", "D1", "phone")
		addDevice(t, db, "@a:x", "D2", "")
		s.DevicesChanged(ctx, "@a:x", []string{"D1", "D2"}, nil)
		if _, err := s.Upload(ctx, "@a:x", "D1", UploadRequest{DeviceKeys: deviceKeysJSON("@a:x", "D1", "ed1", "cu1")}); err != nil {
			t.Fatal(err)
		}
		devs, err := s.LocalUserDevices(ctx, "@a:x")
		if err != nil {
			t.Fatal(err)
		}
		if devs.StreamID != s.DeviceListPosition() || len(devs.Devices) != 2 || devs.Devices[0].Keys == nil || devs.Devices[0].DisplayName != "phone" || devs.Devices[1].Keys != nil {
			t.Fatalf("devices: %+v (position %d)", devs, s.DeviceListPosition())
		}
		// The notices chain: the two devices added, then D1's keys.
		var ns []DeviceListNotice
		for _, raw := range bus.msgs[TopicDeviceLists] {
			var n DeviceListNotice
			_ = json.Unmarshal(raw, &n)
			ns = append(ns, n)
		}
		if len(ns) != 2 || len(ns[0].Devices) != 2 || ns[0].Prev != 0 || ns[1].Prev != ns[0].Pos || ns[1].Pos != devs.StreamID {
			t.Fatalf("notices: %+v", ns)
		}
		ups, signing, err := s.OutboundUpdates(ctx, ns[0])
		if err != nil || signing != nil || len(ups) != 2 {
			t.Fatalf("updates: %+v %v %v", ups, signing, err)
		}
		if ups[0].StreamID != ns[0].Pos-1 || len(ups[0].PrevID) != 0 || ups[1].StreamID != ns[0].Pos || ups[1].PrevID[0] != ups[0].StreamID {
			t.Fatalf("stream IDs: %+v", ups)
		}
		ups, _, _ = s.OutboundUpdates(ctx, ns[1])
		if len(ups) != 1 || ups[0].Keys == nil || ups[0].PrevID[0] != ns[0].Pos || ups[0].DisplayName != "phone" {
			t.Fatalf("upload update: %+v", ups)
		}
		// A deleted device goes out as deleted.
		if err := db.Write(ctx, func(tx *storage.Tx) error {
			_, err := tx.Exec(ctx, `DELETE FROM devices WHERE user_id = '@a:x' AND device_id = 'D2'`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		s.DevicesChanged(ctx, "@a:x", nil, []string{"D2"})
		var last DeviceListNotice
		_ = json.Unmarshal(bus.msgs[TopicDeviceLists][len(bus.msgs[TopicDeviceLists])-1], &last)
		ups, _, _ = s.OutboundUpdates(ctx, last)
		if len(ups) != 1 || !ups[0].Deleted || ups[0].DeviceID != "D2" {
			t.Fatalf("deletion: %+v", ups)
		}
		// Another server's users are not answered here.
		if _, err := s.LocalUserDevices(ctx, "@b:y"); !merr.Is(err, "M_FORBIDDEN") {
			t.Fatalf("remote user: %v", err)
		}
		if _, err := s.LocalQuery(ctx, map[string][]string{"@a:x": nil, "@b:y": nil}); !merr.Is(err, "M_FORBIDDEN") {
			t.Fatalf("remote user in a query: %v", err)
		}
		if _, err := s.LocalUserDevices(ctx, "nobody"); !merr.Is(err, "M_INVALID_PARAM") {
			t.Fatalf("bad user ID: %v", err)
		}
		q, err := s.LocalQuery(ctx, map[string][]string{"@a:x": nil})
		if err != nil || q.DeviceKeys["@a:x"]["D1"] == nil {
			t.Fatalf("query: %+v %v", q, err)
		}
	})
}

// BenchmarkRemoteQueryWarm is /keys/query about 100 users of another
// server, all answered from the cache.
func BenchmarkRemoteQueryWarm(b *testing.B) {
	db := storagetest.Open(b, storage.SQLite)
	_, r, f, rooms, _ := newTestRemote(b, db)
	want := map[string][]string{}
	for i := 0; i < 100; i++ {
		u := fmt.Sprintf("@u%d:y", i)
		f.set(&UserDevices{UserID: u, Devices: []UserDevice{remoteDevice(u, "D1", "phone"), remoteDevice(u, "D2", "laptop")}, MasterKey: masterKeyJSON(u, "M")})
		rooms.share(u, true)
		want[u] = nil
	}
	ctx := context.Background()
	if _, err := r.Query(ctx, "@a:x", want, time.Second); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := r.Query(ctx, "@a:x", want, time.Second)
		if err != nil || len(resp.DeviceKeys) != 100 {
			b.Fatal(err)
		}
	}
	if n := f.queries.Load(); n != 1 {
		b.Fatalf("%d queries to the other server", n)
	}
}
