package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/bus"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

type profiles struct{}

func (profiles) Profile(_ context.Context, userID string) (string, string, error) {
	return "Name of " + userID, "", nil
}

type accounts struct{}

func (accounts) IsGuest(_ context.Context, userID string) (bool, error) {
	return strings.HasPrefix(userID, "@guest"), nil
}

func (accounts) AccountExists(_ context.Context, userID string) (bool, error) {
	return userID != "@ghost:test", nil
}

type harness struct {
	s       *Service
	db      *storage.DB
	mu      sync.Mutex
	notices []Notice
}

func newHarness(t testing.TB, db *storage.DB) *harness {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Start(ctx, bus.Options{StoreDir: t.TempDir(), Namespace: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	key, err := serverkey.Load(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, db, b, profiles{}, accounts{}, Options{ServerName: "test", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	h := &harness{s: s, db: db}
	unsub, err := b.Subscribe(Topic, func(d []byte) {
		var n Notice
		if err := json.Unmarshal(d, &n); err != nil {
			t.Errorf("bad notice: %v", err)
		}
		h.mu.Lock()
		h.notices = append(h.notices, n)
		h.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return h
}

func (h *harness) waitNotices(t *testing.T, n int) []Notice {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		got := append([]Notice(nil), h.notices...)
		h.mu.Unlock()
		if len(got) >= n {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("expected %d notices", n)
	return nil
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if !merr.Is(err, code) {
		t.Fatalf("want %s, got %v", code, err)
	}
}

func TestEveryRoomVersion(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		for v := 1; v <= 12; v++ {
			ver := fmt.Sprint(v)
			t.Run("v"+ver, func(t *testing.T) {
				name := "Room " + ver
				res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{RoomVersion: ver, Name: &name, Invite: []string{"@bob:test"}, Preset: "private_chat"})
				if err != nil {
					t.Fatal(err)
				}
				got, err := h.s.RoomVersion(ctx, res.RoomID)
				if err != nil || got != ver {
					t.Fatalf("version %q %v", got, err)
				}
				// bob is invited: he may join; carol is not invited: she may not.
				if _, err := h.s.Join(ctx, "@carol:test", res.RoomID, ""); !merr.Is(err, "M_FORBIDDEN") {
					t.Fatalf("uninvited join: %v", err)
				}
				if _, err := h.s.Join(ctx, "@bob:test", res.RoomID, ""); err != nil {
					t.Fatal(err)
				}
				id, err := h.s.Send(ctx, Sender{"@bob:test", "BOBDEV"}, SendRequest{RoomID: res.RoomID, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"hi"}`), TxnID: "t1"})
				if err != nil {
					t.Fatal(err)
				}
				again, err := h.s.Send(ctx, Sender{"@bob:test", "BOBDEV"}, SendRequest{RoomID: res.RoomID, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"hi"}`), TxnID: "t1"})
				if err != nil || again != id {
					t.Fatalf("txn retry gave %s (%v), want %s", again, err, id)
				}
				// bob (power 0) may not rename the room
				key := ""
				_, err = h.s.Send(ctx, Sender{"@bob:test", "BOBDEV"}, SendRequest{RoomID: res.RoomID, Type: "m.room.name", StateKey: &key, Content: json.RawMessage(`{"name":"x"}`)})
				wantCode(t, err, "M_FORBIDDEN")
				// alice redacts bob's message
				if _, err := h.s.Redact(ctx, Sender{"@alice:test", "ADEV"}, res.RoomID, id, "spam", "r1"); err != nil {
					t.Fatal(err)
				}
				ev, err := h.s.GetEvent(ctx, id)
				if err != nil || ev.RedactedBy == "" {
					t.Fatalf("not redacted: %+v %v", ev, err)
				}
				var body struct {
					Content map[string]any `json:"content"`
				}
				_ = json.Unmarshal(ev.JSON, &body)
				if len(body.Content) != 0 {
					t.Fatalf("redacted content kept: %v", body.Content)
				}
				if err := h.s.Leave(ctx, "@bob:test", res.RoomID, ""); err != nil {
					t.Fatal(err)
				}
				m, _, err := h.s.Membership(ctx, res.RoomID, "@bob:test")
				if err != nil || m != spec.Leave {
					t.Fatalf("membership %q %v", m, err)
				}
				if err := h.s.Forget(ctx, "@bob:test", res.RoomID); err != nil {
					t.Fatal(err)
				}
			})
		}
	})
}

func TestCreateRoomOptions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		topic := "Plans"
		res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{
			Preset: "public_chat", RoomAliasName: "general", Topic: &topic, Visibility: "public",
			InitialState:              []StateInit{{Type: "m.room.encryption", Content: json.RawMessage(`{"algorithm":"m.megolm.v1.aes-sha2"}`)}},
			PowerLevelContentOverride: json.RawMessage(`{"events_default": 10}`),
			CreationContent:           map[string]json.RawMessage{"m.federate": json.RawMessage(`false`)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.RoomAlias != "#general:test" {
			t.Fatalf("alias %q", res.RoomAlias)
		}
		if id, err := h.s.ResolveAlias(ctx, "#general:test"); err != nil || id != res.RoomID {
			t.Fatalf("resolve: %s %v", id, err)
		}
		_, err = h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{RoomAliasName: "general"})
		wantCode(t, err, "M_ROOM_IN_USE")
		// public: carol joins by alias
		if id, err := h.s.Join(ctx, "@carol:test", "#general:test", ""); err != nil || id != res.RoomID {
			t.Fatalf("join by alias: %s %v", id, err)
		}
		// events_default 10 from the override: carol (0) cannot send messages
		_, err = h.s.Send(ctx, Sender{"@carol:test", "C"}, SendRequest{RoomID: res.RoomID, Type: "m.room.message", Content: json.RawMessage(`{"body":"x"}`), TxnID: "1"})
		wantCode(t, err, "M_FORBIDDEN")
		enc, err := h.s.CurrentStateEvent(ctx, res.RoomID, "m.room.encryption", "")
		if err != nil {
			t.Fatal(err)
		}
		if pub, _ := h.s.Published(ctx, res.RoomID); !pub {
			t.Fatal("not published")
		}
		st, err := h.s.CurrentState(ctx, res.RoomID)
		if err != nil {
			t.Fatal(err)
		}
		types := map[string]bool{}
		for _, e := range st {
			types[e.Type] = true
		}
		for _, want := range []string{"m.room.create", "m.room.member", "m.room.power_levels", "m.room.canonical_alias", "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access", "m.room.encryption", "m.room.topic"} {
			if !types[want] {
				t.Errorf("missing %s in state", want)
			}
		}
		// state after the encryption event has no topic yet (topic came later)
		after, err := h.s.StateIDsAfter(ctx, enc)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := after[[2]string{"m.room.topic", ""}]; ok {
			t.Fatal("state after encryption event already has the topic")
		}
		if _, ok := after[[2]string{"m.room.encryption", ""}]; !ok {
			t.Fatal("state after encryption event lacks it")
		}
		// bad requests
		_, err = h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{RoomVersion: "99"})
		wantCode(t, err, "M_UNSUPPORTED_ROOM_VERSION")
		_, err = h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{Preset: "nope"})
		wantCode(t, err, "M_BAD_JSON")
		_, err = h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{Invite: []string{"not a user"}})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{Invite: []string{"@ghost:test"}})
		wantCode(t, err, "M_NOT_FOUND")
		_, err = h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{InitialState: []StateInit{{Type: "m.room.name", Content: json.RawMessage(`{"name": 1.5}`)}}})
		wantCode(t, err, "M_BAD_JSON")
	})
}

func TestNoticesInOrderAndRestart(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := h.s.Send(ctx, Sender{"@alice:test", "D"}, SendRequest{RoomID: res.RoomID, Type: "m.room.message", Content: json.RawMessage(`{"body":"x"}`), TxnID: fmt.Sprint(i)})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		ns := h.waitNotices(t, 6+20)
		for i := 1; i < len(ns); i++ {
			if ns[i].Pos != ns[i-1].Pos+1 {
				t.Fatalf("notice positions not consecutive: %d then %d", ns[i-1].Pos, ns[i].Pos)
			}
		}
		// A new service on the same database (a restart) keeps positions and txn IDs.
		h2 := newHarness(t, db)
		if h2.s.Position() != h.s.Position() {
			t.Fatalf("position after restart %d, before %d", h2.s.Position(), h.s.Position())
		}
		first := ns[6].EventID
		id, err := h2.s.Send(ctx, Sender{"@alice:test", "D"}, SendRequest{RoomID: res.RoomID, Type: "m.room.message", Content: json.RawMessage(`{"body":"x"}`), TxnID: fmt.Sprint(ns[6].TxnID)})
		if err != nil || id != first {
			t.Fatalf("txn after restart: %s %v, want %s", id, err, first)
		}
		if _, err := h2.s.Send(ctx, Sender{"@alice:test", "D"}, SendRequest{RoomID: res.RoomID, Type: "m.room.message", Content: json.RawMessage(`{"body":"after"}`), TxnID: "new"}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestLongStateChains: snapshots chain to their parents and are cut by a full
// snapshot every so often; the state at any event must come out whole.
func TestLongStateChains(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for i := 0; i < 80; i++ {
			key := fmt.Sprint("k", i)
			id, err := h.s.Send(ctx, Sender{"@alice:test", "D"}, SendRequest{RoomID: res.RoomID, Type: "com.example.state", StateKey: &key, Content: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		// A fresh service (empty caches) reads every snapshot from the database.
		h2 := newHarness(t, db)
		for _, i := range []int{0, 31, 32, 33, 65, 79} {
			ev, err := h2.s.GetEvent(ctx, ids[i])
			if err != nil {
				t.Fatal(err)
			}
			after, err := h2.s.StateIDsAfter(ctx, ev)
			if err != nil {
				t.Fatal(err)
			}
			for j := 0; j < 80; j++ {
				got, ok := after[[2]string{"com.example.state", fmt.Sprint("k", j)}]
				if j <= i && (!ok || got != ids[j]) {
					t.Fatalf("state after event %d lacks key %d", i, j)
				}
				if j > i && ok {
					t.Fatalf("state after event %d has the later key %d", i, j)
				}
			}
			if _, ok := after[[2]string{"m.room.create", ""}]; !ok {
				t.Fatalf("state after event %d lacks the create event", i)
			}
		}
	})
}
