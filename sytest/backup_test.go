package sytest

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/haven-chat/haven/storage/storagetest"
)

// havenCmd runs the haven binary with the server's environment (and extra
// settings, which override it).
func (s *server) havenCmd(t *testing.T, extra []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(havenBin, args...)
	cmd.Dir = s.dir
	cmd.Env = append(append([]string{}, s.env...), extra...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("haven %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// eventsPos is the events position of a sync token ("s<events>_...").
func eventsPos(t *testing.T, token string) int64 {
	t.Helper()
	first, _, _ := strings.Cut(strings.TrimPrefix(token, "s"), "_")
	n, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		t.Fatalf("sync token %q: %v", token, err)
	}
	return n
}

func hasCreate(r *mautrix.RespSync, room id.RoomID) bool {
	jr := r.Rooms.Join[room]
	if jr == nil {
		return false
	}
	for _, ev := range append(append([]*event.Event{}, jr.State.Events...), jr.Timeline.Events...) {
		if ev.Type == event.StateCreate {
			return true
		}
	}
	return false
}

func bodySet(evs []*event.Event) map[string]bool {
	out := map[string]bool{}
	for _, b := range bodies(evs) {
		out[b] = true
	}
	return out
}

// TestBackupRestoreSync: a backup taken while messages are sent is restored
// into a fresh data folder and database. Every message acknowledged before
// the backup began is there; a client whose token comes from after the
// backup is answered as an initial sync (full state), one from before it
// goes on incrementally; new messages arrive and no position is handed
// out twice.
func TestBackupRestoreSync(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}, Name: "Backed up"})
		join(t, bob, room.String())
		sendText(t, alice, room, "before 1")
		_, beforeToken := syncNow(t, bob, "")
		sendText(t, alice, room, "before 2")

		// Messages go on while the backup runs.
		backups := filepath.Join(s.dir, "backups")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := alice.SendText(ctx, room, "during "+strconv.Itoa(i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		out := s.havenCmd(t, nil, "backup", "--to", backups)
		close(stop)
		wg.Wait()
		if !strings.Contains(out, "2 users") {
			t.Fatalf("backup:\n%s", out)
		}
		s.havenCmd(t, nil, "backup", "verify", backups)

		// After the backup: a message the restore will lose, seen by bob.
		sendText(t, alice, room, "lost")
		resp, afterToken := syncNow(t, bob, beforeToken)
		if !bodySet(joinedTimeline(resp, room))["lost"] {
			t.Fatal("bob did not see the message sent after the backup")
		}

		// Restore into a fresh data folder and database, and serve from there.
		s.stop()
		fresh := []string{"HAVEN_DATA_DIR=" + filepath.Join(s.dir, "restored")}
		if strings.Contains(strings.Join(s.env, "\n"), "HAVEN_DATABASE=postgres") {
			fresh = append(fresh, "HAVEN_DATABASE="+storagetest.NewSchema(t))
		}
		out = s.havenCmd(t, fresh, "restore", "--from", backups)
		if !strings.Contains(out, "restored backup") {
			t.Fatalf("restore:\n%s", out)
		}
		s.env = append(s.env, fresh...)
		s.start()

		// bob's token from after the backup: an initial sync, full state.
		resp, next := syncNow(t, bob, afterToken)
		if !hasCreate(resp, room) {
			t.Fatalf("a token from after the backup was answered incrementally: %+v", resp.Rooms.Join[room])
		}
		got := bodySet(joinedTimeline(resp, room))
		if got["lost"] {
			t.Fatal("the message sent after the backup came back")
		}
		// The initial answer's timeline is limited; the history has the rest.
		msgs, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		hist := bodySet(msgs.Chunk)
		if !hist["before 1"] || !hist["before 2"] {
			t.Fatalf("messages acknowledged before the backup are missing: %v", hist)
		}
		if eventsPos(t, next) <= eventsPos(t, afterToken) {
			t.Fatalf("the restored server's position %s is not beyond the old token %s", next, afterToken)
		}

		// A token from before the backup goes on incrementally.
		resp, _ = syncNow(t, bob, beforeToken)
		if hasCreate(resp, room) || len(joinedTimeline(resp, room)) == 0 {
			t.Fatalf("a token from before the backup was not answered incrementally: %+v", resp.Rooms.Join[room])
		}

		// New messages arrive after the token bob now holds.
		sendText(t, alice, room, "after restore")
		resp, next2 := syncNow(t, bob, next)
		if !bodySet(joinedTimeline(resp, room))["after restore"] || hasCreate(resp, room) {
			t.Fatalf("the message sent after the restore did not arrive incrementally: %+v", resp.Rooms.Join[room])
		}
		if eventsPos(t, next2) <= eventsPos(t, next) {
			t.Fatalf("positions went backwards: %s then %s", next, next2)
		}
		s.stop() // before the fresh schema is dropped
	})
}
