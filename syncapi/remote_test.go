package syncapi_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/bus"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/syncapi"
)

// syncOn starts a sync engine with presence on or off over a world's
// database and roomserver (a second engine on the same tables: a restart).
func syncOn(t *testing.T, db *storage.DB, w *world, presence bool) *syncapi.Service {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Start(ctx, bus.Options{StoreDir: t.TempDir(), Namespace: "remote"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ss, err := syncapi.New(ctx, db, b, w.rooms, accountData{w.users}, syncapi.Options{PresenceEnabled: presence})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ss.Close)
	return ss
}

// syncJSON is an initial /sync of alice as JSON.
func syncJSON(t *testing.T, s *syncapi.Service, user string) map[string]any {
	t.Helper()
	resp, err := s.Sync(context.Background(), syncapi.SyncRequest{UserID: user, DeviceID: "D", Opts: syncapi.DefaultOpts()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRemotePresenceAndReceipts: presence and receipts other servers send
// of their users are stored (both databases), shown to the users sharing
// a room as ours are, and read back after a restart; a user in none of our
// rooms, and everything with presence off, is ignored.
func TestRemotePresenceAndReceipts(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		w, _ := worldOn(t, db, false)
		res, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		msgID, err := w.rooms.Send(ctx, roomserver.Sender{UserID: "@alice:test"}, roomserver.SendRequest{RoomID: res.RoomID,
			Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"hi"}`)})
		if err != nil {
			t.Fatal(err)
		}
		w.settle()
		const rita = "@rita:remote.test"
		s := syncOn(t, db, w, true)
		// rita's join, as the roomserver would have told it.
		s.Notifier().LoadMembership(res.RoomID, rita, "join", 1)

		if err := s.SetRemotePresence(ctx, rita, "online", "from afar", 1500, true); err != nil {
			t.Fatal(err)
		}
		if err := s.SetRemotePresence(ctx, "@nobody:remote.test", "online", "", 0, true); err != nil {
			t.Fatal(err)
		}
		if _, ok := s.CurrentPresence("@nobody:remote.test"); ok {
			t.Fatal("presence of a user in none of our rooms kept")
		}
		for _, bad := range []string{"", "busy"} {
			if err := s.SetRemotePresence(ctx, rita, bad, "", 0, false); err == nil {
				t.Fatalf("presence %q taken", bad)
			}
		}
		p, err := s.Presence(ctx, "@alice:test", rita)
		if err != nil {
			t.Fatal(err)
		}
		if p["presence"] != "online" || p["status_msg"] != "from afar" || p["currently_active"] != true || p["last_active_ago"].(int64) < 1500 {
			t.Fatalf("rita's presence: %v", p)
		}
		// The presence stream publishes its position through the bus: poll
		// until alice's sync has it.
		found := false
		for deadline := time.Now().Add(10 * time.Second); !found && time.Now().Before(deadline); {
			for _, ev := range syncJSON(t, s, "@alice:test")["presence"].(map[string]any)["events"].([]any) {
				e := ev.(map[string]any)
				if e["sender"] == rita {
					c := e["content"].(map[string]any)
					found = c["presence"] == "online" && c["currently_active"] == true && c["status_msg"] == "from afar"
				}
			}
			if !found {
				time.Sleep(10 * time.Millisecond)
			}
		}
		if !found {
			t.Fatal("rita's presence not in alice's sync")
		}

		// Receipts: the newest known event of those named; one not known
		// yet is kept as named; the remote time and the thread kept.
		if err := s.SetRemoteReceipt(ctx, rita, res.RoomID, []string{msgID, "$not-yet:remote.test"}, "", 1234); err != nil {
			t.Fatal(err)
		}
		if err := s.SetRemoteReceipt(ctx, rita, res.RoomID, []string{"$later:remote.test"}, msgID, 0); err != nil {
			t.Fatal(err)
		}
		for _, bad := range [][]string{{"nonsense"}, {}} {
			if err := s.SetRemoteReceipt(ctx, rita, res.RoomID, bad, "", 1); err == nil {
				t.Fatalf("receipt of %v taken", bad)
			}
		}
		if err := s.SetRemoteReceipt(ctx, "@nobody:remote.test", res.RoomID, []string{msgID}, "", 1); err == nil {
			t.Fatal("receipt of a user not in the room taken")
		}
		room := syncJSON(t, s, "@alice:test")["rooms"].(map[string]any)["join"].(map[string]any)[res.RoomID].(map[string]any)
		var content map[string]any
		for _, ev := range room["ephemeral"].(map[string]any)["events"].([]any) {
			if e := ev.(map[string]any); e["type"] == "m.receipt" {
				content = e["content"].(map[string]any)
			}
		}
		read := func(eventID string) map[string]any {
			m, _ := content[eventID].(map[string]any)
			r, _ := m["m.read"].(map[string]any)
			u, _ := r[rita].(map[string]any)
			return u
		}
		if r := read(msgID); r == nil || r["ts"] != float64(1234) || r["thread_id"] != nil {
			t.Fatalf("rita's receipt: %v", content)
		}
		if r := read("$later:remote.test"); r == nil || r["thread_id"] != msgID {
			t.Fatalf("rita's threaded receipt: %v", content)
		}

		if err := s.SetPresence(ctx, "@alice:test", "online", nil); err != nil {
			t.Fatal(err)
		}
		// After a restart: read back, currently_active as rita's server said.
		s2 := syncOn(t, db, w, true)
		if e, ok := s2.CurrentPresence(rita); !ok || e.Active == nil || !*e.Active || e.StatusMsg != "from afar" {
			t.Fatalf("rita's presence after a restart: %+v %v", e, ok)
		}
		if e, ok := s2.CurrentPresence("@alice:test"); !ok || e.Active != nil {
			t.Fatalf("our user's presence has a stored currently_active: %+v", e)
		}

		// Presence off: ignored.
		off := syncOn(t, db, w, false)
		off.Notifier().LoadMembership(res.RoomID, "@ron:remote.test", "join", 1)
		if err := off.SetRemotePresence(ctx, "@ron:remote.test", "online", "", 0, true); err != nil {
			t.Fatal(err)
		}
		if _, ok := off.CurrentPresence("@ron:remote.test"); ok {
			t.Fatal("presence taken with presence off")
		}
	})
}
