package sytest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/haven-chat/haven/storage/storagetest"
)

var havenBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "haven-sytest-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	havenBin = filepath.Join(dir, "haven")
	if prebuilt := os.Getenv("SYTEST_HAVEN_BIN"); prebuilt != "" {
		// A binary built beforehand (for example while the tree does not build).
		havenBin = prebuilt
	} else {
		build := exec.Command("go", "build", "-o", havenBin, "../cmd/haven")
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build haven:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a running Haven process.
type server struct {
	t    *testing.T
	URL  string
	dir  string
	env  []string
	args []string // after "serve"
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
	done chan struct{}
}

func (s *server) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.Write(p)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer starts Haven on the given database ("sqlite" or "postgres")
// with open registration and fast password hashing.
func startServer(t *testing.T, db string, env ...string) *server {
	t.Helper()
	s := newServer(t, db, env...)
	s.start()
	return s
}

// newServer prepares a server as startServer does, without starting it
// (the test may write a config file first and set s.args).
func newServer(t *testing.T, db string, env ...string) *server {
	t.Helper()
	s := &server{t: t, dir: t.TempDir()}
	port := freePort(t)
	s.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	s.env = append(os.Environ(),
		"HAVEN_LISTEN="+fmt.Sprintf("127.0.0.1:%d", port),
		"HAVEN_DATA_DIR="+filepath.Join(s.dir, "data"),
		"HAVEN_REGISTRATION_OPEN=true",
		"HAVEN_REGISTRATION_SHARED_SECRET=sytest-shared-secret-0123456789",
		"HAVEN_PASSWORD_HASH_COST=4",
		"HAVEN_RATE_LIMITS_ENABLED=false",
		// The suite's accounts have passwords such as "password-alice";
		// guessing_test.go turns the password policy back on.
		"HAVEN_PASSWORD_POLICY_REFUSE_COMMON=false",
		"HAVEN_PASSWORD_POLICY_MIN_LENGTH=1",
		"HAVEN_LOGGING_LEVEL=warn",
	)
	if db == "postgres" {
		s.env = append(s.env, "HAVEN_DATABASE="+storagetest.NewSchema(t))
	}
	s.env = append(s.env, env...)
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			s.mu.Lock()
			t.Logf("server log:\n%s", s.logs.String())
			s.mu.Unlock()
		}
	})
	return s
}

func (s *server) start() {
	s.t.Helper()
	cmd := exec.Command(havenBin, append([]string{"serve"}, s.args...)...)
	cmd.Dir = s.dir
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = s, s
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			s.t.Fatalf("server exited at start:\n%s", s.logs.String())
		default:
		}
		resp, err := http.Get(s.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("server did not answer /health:\n%s", s.logs.String())
}

func (s *server) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// kill stops the server abruptly, as a crash would.
func (s *server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

func (s *server) restart() {
	s.stop()
	s.start()
}

// eachDB runs fn against a fresh server on SQLite and on PostgreSQL.
func eachDB(t *testing.T, fn func(t *testing.T, s *server)) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			fn(t, startServer(t, db))
		})
	}
}

// register creates an account through /register with m.login.dummy and
// returns a logged-in client.
func (s *server) register(t *testing.T, name string) *mautrix.Client {
	t.Helper()
	ctx := context.Background()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: "password-" + name})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	cli.UserID, cli.AccessToken, cli.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return cli
}

// registerAdmin creates a server admin through the shared-secret
// registration (password "password-" + name) and returns a logged-in client.
func (s *server) registerAdmin(t *testing.T, name string) *mautrix.Client {
	t.Helper()
	nonce := s.do(t, "GET", "/_synapse/admin/v1/register", "", nil).expect(t, 200).str("nonce")
	mac := hmac.New(sha1.New, []byte("sytest-shared-secret-0123456789"))
	mac.Write([]byte(nonce + "\x00" + name + "\x00password-" + name + "\x00admin"))
	r := s.do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": nonce, "username": name,
		"password": "password-" + name, "admin": true, "mac": hex.EncodeToString(mac.Sum(nil))}).expect(t, 200)
	cli, err := mautrix.NewClient(s.URL, id.UserID(r.str("user_id")), r.str("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	cli.DeviceID = id.DeviceID(r.str("device_id"))
	return cli
}

// login logs an existing account in on a new device.
func (s *server) login(t *testing.T, name string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = cli.Login(context.Background(), &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: name},
		Password:         "password-" + name,
		StoreCredentials: true,
	})
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return cli
}

// syncer runs a client's /sync long-poll loop and records what arrives.
type syncer struct {
	cli   *mautrix.Client
	mu    sync.Mutex
	resps []*mautrix.RespSync
	since string
	stop  chan struct{}
	done  chan struct{}
	err   error
	// cancel ends the loop (stopNow; cleanup does it too).
	cancel func()
}

// stopNow ends the sync loop before the test ends (its server is about to stop).
func (sy *syncer) stopNow() {
	sy.cancel()
	<-sy.done
}

func startSyncer(t *testing.T, cli *mautrix.Client) *syncer {
	sy := &syncer{cli: cli, stop: make(chan struct{}), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	sy.cancel = cancel
	go func() {
		defer close(sy.done)
		for {
			resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: sy.since, Timeout: 30000})
			if err != nil {
				if ctx.Err() == nil {
					sy.mu.Lock()
					sy.err = err
					sy.mu.Unlock()
				}
				return
			}
			sy.mu.Lock()
			sy.resps = append(sy.resps, resp)
			sy.since = resp.NextBatch
			sy.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-sy.done
	})
	return sy
}

// waitFor polls until cond holds on the responses received so far.
func (sy *syncer) waitFor(t *testing.T, what string, cond func(r *mautrix.RespSync) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	seen := 0
	for time.Now().Before(deadline) {
		sy.mu.Lock()
		resps := sy.resps[seen:]
		err := sy.err
		sy.mu.Unlock()
		for _, r := range resps {
			seen++
			if cond(r) {
				return
			}
		}
		if err != nil {
			t.Fatalf("sync of %s failed while waiting for %s: %v", sy.cli.UserID, what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s never saw %s", sy.cli.UserID, what)
}

// timelineHas reports whether a sync response has an event with the given body in the room.
func timelineHas(r *mautrix.RespSync, room id.RoomID, body string) bool {
	jr := r.Rooms.Join[room]
	if jr == nil {
		return false
	}
	for _, ev := range jr.Timeline.Events {
		if b, _ := ev.Content.Raw["body"].(string); b == body {
			return true
		}
	}
	return false
}

func mustContain(t *testing.T, haystack, needle string) {
	t.Helper()
	if !strings.Contains(haystack, needle) {
		t.Fatalf("%q does not contain %q", haystack, needle)
	}
}
