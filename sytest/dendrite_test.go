package sytest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/haven-chat/haven/internal/testca"
)

// dendrite is a Dendrite homeserver (v0.13.8, a second implementation of
// the Server-Server API) on loopback, serving federation over TLS with a
// certificate of the test's CA. scripts/test.sh builds it and names its
// folder in SYTEST_DENDRITE_BIN_DIR.
type dendrite struct {
	URL  string
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func startDendrite(t *testing.T, ca *testca.CA, cert, key string) *dendrite {
	t.Helper()
	bin := os.Getenv("SYTEST_DENDRITE_BIN_DIR")
	if bin == "" {
		t.Skip("SYTEST_DENDRITE_BIN_DIR is not set (scripts/test.sh builds Dendrite and sets it)")
	}
	dir := t.TempDir()
	fedPort, httpPort := freePort(t), freePort(t)
	d := &dendrite{URL: fmt.Sprintf("http://127.0.0.1:%d", httpPort), name: fmt.Sprintf("localhost:%d", fedPort), done: make(chan struct{})}
	gen := exec.Command(filepath.Join(bin, "generate-config"), "-ci", "-server", d.name, "-dir", dir)
	cfg, err := gen.Output()
	if err != nil {
		t.Fatalf("dendrite generate-config: %v", err)
	}
	// Our certificates come from the test's CA, which Dendrite does not
	// know; it asks no third-party identity servers.
	text := strings.Replace(string(cfg), "  disable_tls_validation: false\n  disable_http_keepalives", "  disable_tls_validation: true\n  disable_http_keepalives", 1)
	text = strings.Replace(text, "  trusted_third_party_id_servers:\n  - matrix.org\n  - vector.im\n", "  trusted_third_party_id_servers: []\n", 1)
	if err := os.WriteFile(filepath.Join(dir, "dendrite.yaml"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := exec.Command(filepath.Join(bin, "generate-keys"), "--private-key", filepath.Join(dir, "matrix_key.pem"))
	if out, err := keys.CombinedOutput(); err != nil {
		t.Fatalf("dendrite generate-keys: %v\n%s", err, out)
	}
	logs, err := os.Create(filepath.Join(dir, "dendrite.log"))
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(filepath.Join(bin, "dendrite"), "--config", "dendrite.yaml",
		"--http-bind-address", fmt.Sprintf("127.0.0.1:%d", httpPort), "--https-bind-address", fmt.Sprintf("127.0.0.1:%d", fedPort),
		"--tls-cert", cert, "--tls-key", key, "--really-enable-open-registration")
	d.cmd.Dir, d.cmd.Stdout, d.cmd.Stderr = dir, logs, logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); logs.Close(); close(d.done) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "dendrite.log")); err == nil {
				t.Logf("dendrite log (last 4 KiB):\n%s", tail(string(b), 4096))
			}
		}
	})
	waitUntil(t, "Dendrite answers", func() bool {
		resp, err := http.Get(d.URL + "/_matrix/client/versions")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return d
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (d *dendrite) register(t *testing.T, name string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(d.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: name, Password: "password-" + name + "-0123"})
	if err != nil {
		t.Fatalf("register %s on Dendrite: %v", name, err)
	}
	cli.UserID, cli.AccessToken, cli.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return cli
}

// TestFederationWithDendrite: Haven federates with another implementation
// both ways — invites and joins of each other's rooms, messages both
// ways, a room joined by its alias on the other server with its history
// backfilled, profiles.
func TestFederationWithDendrite(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			ca := testca.New(t)
			cert, key := ca.Issue(t, "localhost")
			d := startDendrite(t, ca, cert, key)
			h := startSite(t, db, ca, cert, key, freePort(t), d.name)
			name := h.name
			ctx := context.Background()
			hank, dave := h.register(t, "hank"), d.register(t, "dave")
			hankSync, daveSync := startSyncer(t, hank), startSyncer(t, dave)

			// A room on Haven: Dendrite's user is invited, joins, and both
			// talk.
			onHaven, err := hank.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "on Haven"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := hank.InviteUser(ctx, onHaven.RoomID, &mautrix.ReqInviteUser{UserID: dave.UserID}); err != nil {
				t.Fatalf("Haven invites a Dendrite user: %v", err)
			}
			daveSync.waitFor(t, "Haven's invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[onHaven.RoomID] != nil })
			if _, err := dave.JoinRoom(ctx, onHaven.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{name}}); err != nil {
				t.Fatalf("the Dendrite user joins a Haven room: %v", err)
			}
			send(t, hank, onHaven.RoomID, "from Haven")
			daveSync.waitFor(t, "Haven's message", func(r *mautrix.RespSync) bool { return timelineHas(r, onHaven.RoomID, "from Haven") })
			send(t, dave, onHaven.RoomID, "from Dendrite")
			hankSync.waitFor(t, "Dendrite's message", func(r *mautrix.RespSync) bool { return timelineHas(r, onHaven.RoomID, "from Dendrite") })

			// A room on Dendrite: Haven's user is invited, joins, and both
			// talk.
			onDendrite, err := dave.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "on Dendrite"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dave.InviteUser(ctx, onDendrite.RoomID, &mautrix.ReqInviteUser{UserID: hank.UserID}); err != nil {
				t.Fatalf("Dendrite invites a Haven user: %v", err)
			}
			hankSync.waitFor(t, "Dendrite's invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[onDendrite.RoomID] != nil })
			if _, err := hank.JoinRoom(ctx, onDendrite.RoomID.String(), nil); err != nil {
				t.Fatalf("the Haven user joins a Dendrite room (through the inviter's server): %v", err)
			}
			send(t, dave, onDendrite.RoomID, "Dendrite's room, Dendrite's user")
			hankSync.waitFor(t, "the message in Dendrite's room", func(r *mautrix.RespSync) bool {
				return timelineHas(r, onDendrite.RoomID, "Dendrite's room, Dendrite's user")
			})
			send(t, hank, onDendrite.RoomID, "Dendrite's room, Haven's user")
			daveSync.waitFor(t, "Haven's message in Dendrite's room", func(r *mautrix.RespSync) bool {
				return timelineHas(r, onDendrite.RoomID, "Dendrite's room, Haven's user")
			})

			// A public room on Dendrite with history, joined by its alias;
			// Haven fetches the history when its user pages back.
			pub, err := dave.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lobby"})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 15; i++ {
				send(t, dave, pub.RoomID, fmt.Sprintf("history %d", i))
			}
			joined, err := hank.JoinRoom(ctx, "#lobby:"+d.name, nil)
			if err != nil || joined.RoomID != pub.RoomID {
				t.Fatalf("join Dendrite's room by alias: %+v %v", joined, err)
			}
			msgs, err := hank.Messages(ctx, pub.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
			if err != nil {
				t.Fatal(err)
			}
			var bodies []string
			for _, ev := range msgs.Chunk {
				if body, _ := ev.Content.Raw["body"].(string); strings.HasPrefix(body, "history ") {
					bodies = append(bodies, body)
				}
			}
			if len(bodies) != 15 || bodies[0] != "history 14" || bodies[14] != "history 0" {
				t.Fatalf("Dendrite's history through Haven: %v", bodies)
			}

			// Profiles across.
			if err := dave.SetDisplayName(ctx, "Dave on Dendrite"); err != nil {
				t.Fatal(err)
			}
			prof, err := hank.GetProfile(ctx, dave.UserID)
			if err != nil || prof.DisplayName != "Dave on Dendrite" {
				t.Fatalf("Dendrite user's profile through Haven: %+v %v", prof, err)
			}
		})
	}
}
