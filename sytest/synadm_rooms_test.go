package sytest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// synadmRun runs synadm (Debian's package) against the server as the
// admin, in batch mode with JSON output, and returns its output.
func synadmRun(t *testing.T, s *server, home, token string, args ...string) string {
	t.Helper()
	cfg := filepath.Join(home, "synadm.yaml")
	if _, err := os.Stat(cfg); err != nil {
		// synadm takes an entry that is false or empty for a missing one.
		conf := fmt.Sprintf("user: boss\ntoken: %s\nbase_url: %s\nadmin_path: /_synapse/admin\nmatrix_path: /_matrix\n"+
			"timeout: 30\nformat: json\ndebug: 'no'\nssl_verify: 'no'\nhomeserver: localhost\nserver_discovery: well-known\n", token, s.URL)
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("synadm", append([]string{"--batch", "-o", "json", "-c", cfg}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "ERROR") {
		t.Fatalf("synadm %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestSynadmRooms drives the room, history and media commands of synadm,
// a real admin tool written for Synapse, against Haven.
func TestSynadmRooms(t *testing.T) {
	if _, err := exec.LookPath("synadm"); err != nil {
		t.Skip("synadm is not installed (apt install synadm)")
	}
	eachDB(t, func(t *testing.T, s *server) {
		home := t.TempDir()
		admin := s.registerAdmin(t, "boss")
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Synadm room", Preset: "public_chat"})
		join(t, bob, room.String())
		for i := 0; i < 3; i++ {
			sendText(t, alice, room, fmt.Sprintf("old %d", i))
		}
		keep := sendText(t, bob, room, "kept")
		up, err := alice.UploadBytesWithName(t.Context(), []byte("x"), "text/plain", "x.txt")
		if err != nil {
			t.Fatal(err)
		}
		run := func(args ...string) string { return synadmRun(t, s, home, admin.AccessToken, args...) }

		out := run("room", "list", "-n", "synadm", "-s", "joined_members")
		if !strings.Contains(out, room.String()) || !strings.Contains(out, `"total_rooms": 1`) {
			t.Fatalf("room list: %s", out)
		}
		if out = run("room", "details", room.String()); !strings.Contains(out, `"joined_local_members": 2`) {
			t.Fatalf("room details: %s", out)
		}
		if out = run("room", "members", room.String()); !strings.Contains(out, bob.UserID.String()) {
			t.Fatalf("room members: %s", out)
		}
		if out = run("room", "state", room.String()); !strings.Contains(out, "m.room.create") {
			t.Fatalf("room state: %s", out)
		}
		out = run("history", "purge", "-i", keep.String(), "--delete-local", room.String())
		var purge struct {
			PurgeID string `json:"purge_id"`
		}
		if json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &purge); purge.PurgeID == "" {
			t.Fatalf("history purge: %s", out)
		}
		eventually(t, "the purge", func() bool {
			return strings.Contains(run("history", "purge-status", purge.PurgeID), "complete")
		})
		if got := fmt.Sprint(bodies(allMessages(t, bob, room))); strings.Contains(got, "old") {
			t.Fatalf("messages after synadm's purge: %s", got)
		}
		if out = run("user", "media", alice.UserID.String()); !strings.Contains(out, up.ContentURI.FileID) {
			t.Fatalf("user media: %s", out)
		}
		run("media", "quarantine", "-i", up.ContentURI.FileID, "-s", "localhost")
		s.do(t, "GET", "/_matrix/client/v1/media/download/localhost/"+up.ContentURI.FileID, alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		run("media", "delete", "-i", up.ContentURI.FileID)

		out = run("room", "delete", "-b", room.String())
		if !strings.Contains(out, alice.UserID.String()) || !strings.Contains(out, "kicked_users") {
			t.Fatalf("room delete: %s", out)
		}
		_, err = bob.JoinRoomByID(t.Context(), id.RoomID(room))
		mustErr(t, "join the deleted room", err, 403, "M_FORBIDDEN")
	})
}
