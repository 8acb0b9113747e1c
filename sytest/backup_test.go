package sytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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

// backupCounts is the "N users, N rooms, N events, N media" of haven
// backup's report.
func backupCounts(t *testing.T, out string) string {
	t.Helper()
	c := regexp.MustCompile(`\d+ users, \d+ rooms, \d+ events, \d+ media`).FindString(out)
	if c == "" {
		t.Fatalf("no counts in:\n%s", out)
	}
	return c
}

// freshPlace is the settings of an empty data folder (and for PostgreSQL
// an empty schema) to restore into.
func (s *server) freshPlace(t *testing.T, name string) []string {
	fresh := []string{"HAVEN_DATA_DIR=" + filepath.Join(s.dir, name)}
	if strings.Contains(strings.Join(s.env, "\n"), "HAVEN_DATABASE=postgres") {
		fresh = append(fresh, "HAVEN_DATABASE="+storagetest.NewSchema(t))
	}
	return fresh
}

// backedUp is what was given to the server before the backups, checked
// on each restored server.
type backedUp struct {
	room   id.RoomID
	key    testKey
	device id.DeviceID
	media  map[id.ContentURI][]byte
}

// checkRestored: alice's password logs in, her device keys are returned by
// /keys/query and one of her one-time keys can be claimed, and every media
// file downloads byte-identical.
func (b backedUp) checkRestored(t *testing.T, s *server) {
	t.Helper()
	ctx := context.Background()
	alice := s.login(t, "alice")
	carol := s.register(t, "carol")
	r := s.do(t, "POST", v3+"/keys/query", carol.AccessToken, map[string]any{"device_keys": map[string]any{alice.UserID.String(): []string{}}}).expect(t, 200)
	dk, _ := r.JSON["device_keys"].(map[string]any)[alice.UserID.String()].(map[string]any)[b.device.String()].(map[string]any)
	if dk == nil || dk["keys"].(map[string]any)["ed25519:"+b.device.String()] != b.key.pub {
		t.Fatalf("alice's device keys after the restore: %s", r)
	}
	r = s.do(t, "POST", v3+"/keys/claim", carol.AccessToken, map[string]any{"one_time_keys": map[string]any{
		alice.UserID.String(): map[string]string{b.device.String(): "signed_curve25519"}}}).expect(t, 200)
	otks, _ := r.JSON["one_time_keys"].(map[string]any)[alice.UserID.String()].(map[string]any)[b.device.String()].(map[string]any)
	if len(otks) != 1 {
		t.Fatalf("no one-time key claimed after the restore: %s", r)
	}
	for uri, want := range b.media {
		resp, err := carol.Download(ctx, uri)
		if err != nil {
			t.Fatalf("download %s after the restore: %v", uri, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("media %s after the restore: %d bytes (%v), want %d identical bytes", uri, len(got), err, len(want))
		}
	}
}

func (b *backedUp) upload(t *testing.T, cli *mautrix.Client, size int) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	up, err := cli.UploadBytesWithName(context.Background(), data, "application/octet-stream", "blob.bin")
	if err != nil {
		t.Fatal(err)
	}
	b.media[up.ContentURI] = data
}

// TestBackupRestoreSync: a backup taken while messages are sent is restored
// into a fresh data folder and database. Every message acknowledged before
// the backup began is there; a client whose token comes from after the
// backup is answered as an initial sync (full state), one from before it
// goes on incrementally; new messages arrive and no position is handed
// out twice. Logins, end-to-end keys and media come back; an incremental
// backup on top of the full one restores to the same rooms, messages and
// counts as a new full backup taken at the same moment.
func TestBackupRestoreSync(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}, Name: "Backed up"})
		join(t, bob, room.String())
		kept := backedUp{room: room, key: newTestKey(t), device: alice.DeviceID, media: map[id.ContentURI][]byte{}}
		otk := func(n string) json.RawMessage {
			return kept.key.sign(t, alice.UserID.String(), "ed25519:"+alice.DeviceID.String(), map[string]any{"key": "otk-" + n})
		}
		s.do(t, "POST", v3+"/keys/upload", alice.AccessToken, map[string]any{"device_keys": deviceKeysOf(t, alice, kept.key),
			"one_time_keys": map[string]any{"signed_curve25519:1": otk("1"), "signed_curve25519:2": otk("2")}}).expect(t, 200)
		kept.upload(t, alice, 300<<10)
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

		// More messages and media, then at one quiet moment an incremental
		// backup on top of the full one and a new full one elsewhere.
		for i := 0; i < 5; i++ {
			sendText(t, alice, room, "between "+strconv.Itoa(i))
		}
		kept.upload(t, alice, 200<<10)
		incr := s.havenCmd(t, nil, "backup", "--incremental", "--to", backups)
		if !strings.Contains(incr, "1 copied now") {
			t.Fatalf("the incremental backup did not copy just the new media file:\n%s", incr)
		}
		fulls := filepath.Join(s.dir, "fulls")
		full := s.havenCmd(t, nil, "backup", "--to", fulls)
		if a, b := backupCounts(t, incr), backupCounts(t, full); a != b {
			t.Fatalf("incremental backup: %s; new full backup: %s", a, b)
		}
		s.havenCmd(t, nil, "backup", "verify", backups)

		// After the backups: a message the restore will lose, seen by bob.
		sendText(t, alice, room, "lost")
		resp, afterToken := syncNow(t, bob, beforeToken)
		if !bodySet(joinedTimeline(resp, room))["lost"] {
			t.Fatal("bob did not see the message sent after the backup")
		}

		// The new full backup, restored into a fresh place and served.
		s.stop()
		live := s.env
		fromFull := s.freshPlace(t, "restored-full")
		out = s.havenCmd(t, fromFull, "restore", "--from", fulls)
		if !strings.Contains(out, "restored backup") || !strings.Contains(out, backupCounts(t, full)) {
			t.Fatalf("restore of the new full backup:\n%s", out)
		}
		s.env = append(slices.Clone(live), fromFull...)
		s.start()
		kept.checkRestored(t, s)
		fullMsgs := eventIDs(allMessages(t, bob, room))
		s.stop()

		// The full backup and its incremental, restored into another fresh
		// place and served: the same as the new full one.
		fresh := s.freshPlace(t, "restored")
		out = s.havenCmd(t, fresh, "restore", "--from", backups)
		if !strings.Contains(out, "restored backup") || !strings.Contains(out, backupCounts(t, full)) {
			t.Fatalf("restore of the incremental backup:\n%s", out)
		}
		s.env = append(slices.Clone(live), fresh...)
		s.start()
		kept.checkRestored(t, s)
		if incrMsgs := eventIDs(allMessages(t, bob, room)); !slices.Equal(incrMsgs, fullMsgs) {
			t.Fatalf("messages restored from the incremental backup:\n%v\nfrom the new full backup:\n%v", incrMsgs, fullMsgs)
		}
		if hist := bodySet(allMessages(t, bob, room)); !hist["between 4"] || hist["lost"] {
			t.Fatalf("the restored history is not the incremental backup's: %v", hist)
		}

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
		hist := bodySet(allMessages(t, bob, room))
		if !hist["before 1"] || !hist["before 2"] {
			t.Fatalf("messages acknowledged before the backup are missing: %v", hist)
		}
		if eventsPos(t, next) <= eventsPos(t, afterToken) {
			t.Fatalf("the restored server's position %s is not beyond the old token %s", next, afterToken)
		}

		// /keys/changes from that token starts over too: every device list
		// bob shares a room with, as from the beginning.
		var kc struct {
			Changed []string `json:"changed"`
		}
		kr := s.do(t, "GET", v3+"/keys/changes?from="+url.QueryEscape(afterToken)+"&to="+url.QueryEscape(next), bob.AccessToken, nil).expect(t, 200)
		if err := json.Unmarshal(kr.Raw, &kc); err != nil || !slices.Contains(kc.Changed, alice.UserID.String()) {
			t.Fatalf("keys/changes from a token from after the backup: %s, want alice's device list", kr)
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

		// /messages from the lost token needs no special case: forwards it
		// reaches what was sent after the restore, backwards the history
		// the restored database holds, and never the lost message.
		fwd, err := bob.Messages(context.Background(), room, afterToken, "", mautrix.DirectionForward, nil, 50)
		if err != nil {
			t.Fatalf("messages forwards from a token from after the backup: %v", err)
		}
		if got := bodySet(fwd.Chunk); !got["after restore"] || got["lost"] {
			t.Fatalf("messages forwards from a token from after the backup: %v", got)
		}
		bwd, err := bob.Messages(context.Background(), room, afterToken, "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatalf("messages backwards from a token from after the backup: %v", err)
		}
		if got := bodySet(bwd.Chunk); !got["between 4"] || got["lost"] || got["after restore"] {
			t.Fatalf("messages backwards from a token from after the backup: %v", got)
		}
		s.stop() // before the fresh schema is dropped
	})
}
