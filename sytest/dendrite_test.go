package sytest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

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

// TestE2EEKeysWithDendrite: the keys of end-to-end encryption cross
// between Haven and Dendrite both ways — a user of each, sharing a room,
// gets the other's device keys (/keys/query) with their signatures intact,
// claims each of the other's one-time keys once (/keys/claim), and sends
// the other's device a to-device message.
func TestE2EEKeysWithDendrite(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			ca := testca.New(t)
			cert, key := ca.Issue(t, "localhost")
			d := startDendrite(t, ca, cert, key)
			h := startSite(t, db, ca, cert, key, freePort(t), d.name)
			ctx := context.Background()
			hank, dave := h.register(t, "hank"), d.register(t, "dave")
			hankSync, daveSync := startSyncer(t, hank), startSyncer(t, dave)

			// A room they share, so that each server follows the other's
			// user's devices, as for an encrypted room.
			room, err := hank.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{dave.UserID}})
			if err != nil {
				t.Fatal(err)
			}
			daveSync.waitFor(t, "Haven's invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room.RoomID] != nil })
			if _, err := dave.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{h.name}}); err != nil {
				t.Fatalf("the Dendrite user joins: %v", err)
			}
			hankSync.waitFor(t, "dave's join", func(r *mautrix.RespSync) bool {
				jr := r.Rooms.Join[room.RoomID]
				return jr != nil && memberOf(jr.Timeline.Events, dave.UserID, "join")
			})

			hankKeys, daveKeys := uploadDeviceAndOTKs(t, hank), uploadDeviceAndOTKs(t, dave)

			// Each gets the other's device keys from the other server.
			wantRemoteDevice(t, hank, dave, daveKeys)
			wantRemoteDevice(t, dave, hank, hankKeys)

			// Each claims the other's two one-time keys, each once.
			wantRemoteOTKs(t, hank, dave, daveKeys)
			wantRemoteOTKs(t, dave, hank, hankKeys)

			// A to-device message each way.
			typ := event.Type{Type: "org.haven.test.interop", Class: event.ToDeviceEventType}
			sendTo := func(from, to *mautrix.Client, n int) {
				t.Helper()
				if _, err := from.SendToDevice(ctx, typ, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
					to.UserID: {to.DeviceID: {Raw: map[string]any{"n": n}}},
				}}); err != nil {
					t.Errorf("%s sends a to-device message to %s: %v", from.UserID, to.UserID, err)
				}
			}
			got := func(from *mautrix.Client, n int) func(r *mautrix.RespSync) bool {
				return func(r *mautrix.RespSync) bool {
					for _, ev := range r.ToDevice.Events {
						if ev.Type.Type == typ.Type && ev.Sender == from.UserID && ev.Content.Raw["n"] == float64(n) {
							return true
						}
					}
					return false
				}
			}
			sendTo(hank, dave, 1)
			if !daveSync.within(20*time.Second, got(hank, 1)) {
				t.Errorf("the Dendrite user never got the Haven user's to-device message")
			}
			sendTo(dave, hank, 2)
			if !hankSync.within(20*time.Second, got(dave, 2)) {
				t.Errorf("the Haven user never got the Dendrite user's to-device message")
			}
		})
	}
}

// within reports whether cond holds on a response received within d
// (from the start of the wait on; earlier ones are looked at too).
func (sy *syncer) within(d time.Duration, cond func(r *mautrix.RespSync) bool) bool {
	deadline := time.Now().Add(d)
	seen := 0
	for time.Now().Before(deadline) {
		sy.mu.Lock()
		resps := sy.resps[seen:]
		sy.mu.Unlock()
		for _, r := range resps {
			seen++
			if cond(r) {
				return true
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// uploadedKeys is what a client uploaded: its device's signing key and
// its one-time keys (key ID → curve25519 key).
type uploadedKeys struct {
	device testKey
	otks   map[string]string
}

// uploadDeviceAndOTKs uploads signed device keys and two signed one-time
// keys for the client's device, to whichever server it is on. The
// curve25519 keys are random but, as a client's, unpadded base64 of 32
// bytes: Dendrite decodes them.
func uploadDeviceAndOTKs(t *testing.T, cli *mautrix.Client) uploadedKeys {
	t.Helper()
	curve := func() string {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return base64.RawStdEncoding.EncodeToString(b)
	}
	user, dev := cli.UserID.String(), cli.DeviceID.String()
	k := uploadedKeys{device: newTestKey(t), otks: map[string]string{}}
	otks := map[string]json.RawMessage{}
	for _, kid := range []string{"signed_curve25519:AAAAAQ", "signed_curve25519:AAAAAg"} {
		k.otks[kid] = curve()
		otks[kid] = k.device.sign(t, user, "ed25519:"+dev, map[string]any{"key": k.otks[kid]})
	}
	deviceKeys := k.device.sign(t, user, "ed25519:"+dev, map[string]any{
		"user_id": user, "device_id": dev,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + dev: k.device.pub, "curve25519:" + dev: curve()},
	})
	var resp struct {
		Counts map[string]int `json:"one_time_key_counts"`
	}
	body := map[string]any{"device_keys": deviceKeys, "one_time_keys": otks}
	if _, err := cli.MakeRequest(context.Background(), "POST", cli.BuildClientURL("v3", "keys", "upload"), body, &resp); err != nil {
		t.Fatalf("%s uploads its keys: %v", cli.UserID, err)
	}
	if resp.Counts["signed_curve25519"] != 2 {
		t.Fatalf("%s's one-time key counts after the upload: %v", cli.UserID, resp.Counts)
	}
	return k
}

// verifySigned checks the ed25519 signature of user's device over obj.
func verifySigned(user, deviceID string, k testKey, obj json.RawMessage) error {
	pub, err := base64.RawStdEncoding.DecodeString(k.pub)
	if err != nil {
		return err
	}
	return gomatrixserverlib.VerifyJSON(user, gomatrixserverlib.KeyID("ed25519:"+deviceID), ed25519.PublicKey(pub), obj)
}

// wantRemoteDevice: from gets other's device keys through its own server,
// with other's signature intact.
func wantRemoteDevice(t *testing.T, from, other *mautrix.Client, keys uploadedKeys) {
	t.Helper()
	var resp struct {
		DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
		Failures   map[string]json.RawMessage            `json:"failures"`
	}
	body := map[string]any{"device_keys": map[string]any{other.UserID.String(): []string{}}}
	if _, err := from.MakeRequest(context.Background(), "POST", from.BuildClientURL("v3", "keys", "query"), body, &resp); err != nil {
		t.Errorf("%s queries the keys of %s: %v", from.UserID, other.UserID, err)
		return
	}
	raw, ok := resp.DeviceKeys[other.UserID.String()][other.DeviceID.String()]
	if !ok {
		t.Errorf("%s's /keys/query has no device %s of %s: device_keys %v, failures %s", from.UserID, other.DeviceID, other.UserID, resp.DeviceKeys, resp.Failures)
		return
	}
	var dk struct {
		UserID   string            `json:"user_id"`
		DeviceID string            `json:"device_id"`
		Keys     map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(raw, &dk); err != nil {
		t.Errorf("%s's device keys: %v: %s", other.UserID, err, raw)
		return
	}
	if dk.UserID != other.UserID.String() || dk.DeviceID != other.DeviceID.String() || dk.Keys["ed25519:"+other.DeviceID.String()] != keys.device.pub {
		t.Errorf("%s gets other device keys for %s than were uploaded: %s", from.UserID, other.UserID, raw)
	}
	if err := verifySigned(other.UserID.String(), other.DeviceID.String(), keys.device, raw); err != nil {
		t.Errorf("%s's device keys, as %s gets them, fail their signature check: %v: %s", other.UserID, from.UserID, err, raw)
	}
}

// wantRemoteOTKs: from claims other's two one-time keys through its own
// server, each once, signed by other's device; a third claim has none left.
func wantRemoteOTKs(t *testing.T, from, other *mautrix.Client, keys uploadedKeys) {
	t.Helper()
	claimed := map[string]bool{}
	for i := 0; i < 3; i++ {
		var resp struct {
			OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
			Failures    map[string]json.RawMessage                       `json:"failures"`
		}
		body := map[string]any{"one_time_keys": map[string]any{other.UserID.String(): map[string]string{other.DeviceID.String(): "signed_curve25519"}}}
		if _, err := from.MakeRequest(context.Background(), "POST", from.BuildClientURL("v3", "keys", "claim"), body, &resp); err != nil {
			t.Errorf("%s claims a one-time key of %s: %v", from.UserID, other.UserID, err)
			return
		}
		got := resp.OneTimeKeys[other.UserID.String()][other.DeviceID.String()]
		if i == 2 {
			if len(got) != 0 {
				t.Errorf("a third claim by %s still got a one-time key of %s: %v", from.UserID, other.UserID, got)
			}
			continue
		}
		if len(got) != 1 {
			t.Errorf("claim %d by %s of %s's one-time key: %v, failures %s", i+1, from.UserID, other.UserID, got, resp.Failures)
			return
		}
		for kid, raw := range got {
			var otk struct {
				Key string `json:"key"`
			}
			_ = json.Unmarshal(raw, &otk)
			if keys.otks[kid] == "" || otk.Key != keys.otks[kid] || claimed[kid] {
				t.Errorf("claim %d by %s got %s %s (uploaded %v, claimed before %v)", i+1, from.UserID, kid, raw, keys.otks, claimed)
			}
			if err := verifySigned(other.UserID.String(), other.DeviceID.String(), keys.device, raw); err != nil {
				t.Errorf("%s's one-time key %s, as %s claims it, fails its signature check: %v", other.UserID, kid, from.UserID, err)
			}
			claimed[kid] = true
		}
	}
}
