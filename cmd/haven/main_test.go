package main

// End-to-end tests of the haven binary: it is built once in TestMain and run
// as a separate process, the way an operator runs it. PostgreSQL
// (127.0.0.1:5432, database test) and NATS (127.0.0.1:4222) must be running;
// scripts/services.sh starts them.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// havenBin is the binary built by TestMain.
var havenBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "haven-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		os.Exit(1)
	}
	havenBin = filepath.Join(dir, "haven")
	build := exec.Command(e2eGoTool(), "build", "-o", havenBin, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "go build ./cmd/haven:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// e2eGoTool finds the go command that runs these tests.
func e2eGoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// e2eEnv is this process's environment without any HAVEN_ setting, so a
// variable set in the developer's shell cannot change what a test checks.
func e2eEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HAVEN_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// e2eBuffer collects a process's output while the test reads it.
type e2eBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *e2eBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *e2eBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// e2eProc is a running haven process.
type e2eProc struct {
	cmd            *exec.Cmd
	stdout, stderr *e2eBuffer
	done           chan struct{}
	code           int
}

// e2eStart runs the binary in dir and stops it (if still running) when the test ends.
func e2eStart(t *testing.T, dir string, env []string, args ...string) *e2eProc {
	t.Helper()
	p := &e2eProc{cmd: exec.Command(havenBin, args...), stdout: &e2eBuffer{}, stderr: &e2eBuffer{}, done: make(chan struct{})}
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start haven: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *e2eProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to end by itself and returns its exit code.
func (p *e2eProc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(within):
		t.Fatalf("haven did not exit within %v\nstdout:\n%s\nstderr:\n%s", within, p.stdout, p.stderr)
		return -1
	}
}

// stop sends SIGTERM and returns the exit code.
func (p *e2eProc) stop(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !p.exited() {
		t.Fatalf("SIGTERM: %v", err)
	}
	return p.wait(t, 30*time.Second)
}

// e2eRun runs the binary to completion and returns its output and exit code.
func e2eRun(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, havenBin, args...)
	cmd.Dir, cmd.Env = dir, env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("haven %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// e2eEventually polls cond until it returns nil, failing the test after timeout
// or as soon as the process p (if not nil) exits.
func e2eEventually(t *testing.T, p *e2eProc, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if p != nil && p.exited() {
			t.Fatalf("%s: haven exited with code %d\nstdout:\n%s\nstderr:\n%s", what, p.code, p.stdout, p.stderr)
		}
		if time.Now().After(deadline) {
			msg := ""
			if p != nil {
				msg = fmt.Sprintf("\nstdout:\n%s\nstderr:\n%s", p.stdout, p.stderr)
			}
			t.Fatalf("%s: still failing after %v: %v%s", what, timeout, err, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// e2eFreeAddr returns a loopback address with a port nobody listens on.
func e2eFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

var e2eClient = &http.Client{Timeout: 10 * time.Second}

// e2eGet fetches a URL and returns the status and body.
func e2eGet(rawURL string) (int, http.Header, string, error) {
	resp, err := e2eClient.Get(rawURL)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body), err
}

func e2eMustGet(t *testing.T, rawURL string) (int, http.Header, string) {
	t.Helper()
	status, h, body, err := e2eGet(rawURL)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	return status, h, body
}

// e2eServe starts `haven` (serve) and waits for its startup line and
// for /health to answer.
func e2eServe(t *testing.T, dir, addr string, env []string, args ...string) *e2eProc {
	t.Helper()
	p := e2eStart(t, dir, env, args...)
	e2eEventually(t, p, 60*time.Second, "startup line", func() error {
		if !strings.Contains(p.stdout.String(), "\n") {
			return errors.New("no line on stdout yet")
		}
		return nil
	})
	e2eEventually(t, p, 30*time.Second, "/health", func() error {
		status, _, body, err := e2eGet("http://" + addr + "/health")
		if err != nil {
			return err
		}
		if status != 200 || body != "OK" {
			return fmt.Errorf("status %d body %q", status, body)
		}
		return nil
	})
	return p
}

// e2eMatrixError decodes a Matrix error body.
func e2eMatrixError(t *testing.T, h http.Header, body string) (errcode string) {
	t.Helper()
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, body %q", ct, body)
	}
	var e struct {
		Errcode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("not a Matrix error: %q (%v)", body, err)
	}
	return e.Errcode
}

// e2eSigningKey reads the server's signing key from its SQLite database.
func e2eSigningKey(t *testing.T, dbPath string) (string, []byte, int) {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Connect(ctx, storage.Target{Dialect: storage.SQLite, Path: dbPath}, storage.Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatalf("open %s: %v", dbPath, err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM server_keys`).Scan(&n); err != nil {
		t.Fatalf("count server_keys: %v", err)
	}
	var id string
	var seed []byte
	if err := db.QueryRow(ctx, `SELECT key_id, seed FROM server_keys ORDER BY created_ts, key_id LIMIT 1`).Scan(&id, &seed); err != nil {
		t.Fatalf("read server_keys: %v", err)
	}
	return id, seed, n
}

func TestZeroConfigServe(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr := e2eFreeAddr(t)
	env := e2eEnv("HAVEN_LISTEN=" + addr)
	p := e2eServe(t, dir, addr, env)

	line := p.stdout.String()
	for _, want := range []string{
		"listening on http://" + addr,
		"server name localhost",
		"database sqlite:haven-data/haven.db",
		"haven create-user --user alice --admin",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("startup line lacks %q: %q", want, line)
		}
	}

	status, h, body := e2eMustGet(t, "http://"+addr+"/_matrix/client/versions")
	var versions struct {
		Versions []string `json:"versions"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &versions) != nil || len(versions.Versions) == 0 {
		t.Errorf("/versions: %d %q", status, body)
	}
	if h.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("/versions without CORS headers: %v", h)
	}

	status, h, body = e2eMustGet(t, "http://"+addr+"/_matrix/client/v3/no_such_endpoint?access_token=syt_e2e_secret_token")
	if status != 404 || e2eMatrixError(t, h, body) != "M_UNRECOGNIZED" {
		t.Errorf("unknown path: %d %q", status, body)
	}

	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit code %d\nstderr:\n%s", code, p.stderr)
	}
	if n := strings.Count(p.stdout.String(), "\n"); n != 1 {
		t.Errorf("want exactly one line on stdout, got %d:\n%s", n, p.stdout)
	}
	if strings.Contains(p.stderr.String(), "access_token") || strings.Contains(p.stderr.String(), "syt_e2e_secret_token") {
		t.Errorf("the access token reached the log:\n%s", p.stderr)
	}

	dataDir := filepath.Join(dir, "haven-data")
	if fi, err := os.Stat(filepath.Join(dataDir, "haven.db")); err != nil || fi.Size() == 0 {
		t.Fatalf("haven-data/haven.db: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dataDir, "nats")); err != nil || !fi.IsDir() {
		t.Fatalf("haven-data/nats: %v", err)
	}
	id1, seed1, n := e2eSigningKey(t, filepath.Join(dataDir, "haven.db"))
	if n != 1 || len(seed1) != 32 || !strings.HasPrefix(id1, "ed25519:") {
		t.Fatalf("server_keys after the first start: %d rows, %s, %d-byte seed", n, id1, len(seed1))
	}

	// A restart keeps the signing key.
	p = e2eServe(t, dir, addr, env)
	if code := p.stop(t); code != 0 {
		t.Fatalf("second SIGTERM: exit code %d\nstderr:\n%s", code, p.stderr)
	}
	id2, seed2, n := e2eSigningKey(t, filepath.Join(dataDir, "haven.db"))
	if n != 1 || id2 != id1 || !bytes.Equal(seed1, seed2) {
		t.Fatalf("signing key changed across a restart: %s -> %s (%d rows)", id1, id2, n)
	}
}

// e2eWithPassword puts a password into a PostgreSQL URL. The test server trusts
// local connections, so the password is never checked, only carried.
func e2eWithPassword(t *testing.T, raw, password string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

func TestServeOnPostgresHidesThePassword(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr := e2eFreeAddr(t)
	dbURL := e2eWithPassword(t, storagetest.NewSchema(t), "s3cr3t-pw")
	p := e2eServe(t, dir, addr, e2eEnv("HAVEN_LISTEN="+addr, "HAVEN_DATABASE="+dbURL, "HAVEN_SERVER_NAME=chat.example.com"))
	line := p.stdout.String()
	if !strings.Contains(line, "server name chat.example.com") || !strings.Contains(line, "database "+storage.RedactURL(dbURL)+",") ||
		!strings.Contains(line, ":xxxxx@") {
		t.Errorf("startup line: %q", line)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit code %d\nstderr:\n%s", code, p.stderr)
	}
	if strings.Contains(p.stdout.String()+p.stderr.String(), "s3cr3t-pw") {
		t.Fatalf("password printed:\n%s\n%s", p.stdout, p.stderr)
	}
}

// e2eProblemBlocks splits check-config output into its problems: a line naming
// the key and what is wrong, followed by its "  Fix:" line.
func e2eProblemBlocks(t *testing.T, out string) []string {
	t.Helper()
	var blocks []string
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		if strings.HasSuffix(lines[i], "configuration problem(s):") {
			continue
		}
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "  Fix: ") {
			t.Fatalf("problem without a Fix line: %q in\n%s", lines[i], out)
		}
		blocks = append(blocks, lines[i]+"\n"+lines[i+1])
		i++
	}
	return blocks
}

var e2eProblemCount = regexp.MustCompile(`(?m)^(\d+) configuration problem\(s\):$`)

// e2eBadConfig writes a file with static mistakes (typo, wrong type, bad
// server_name) and live ones (busy port, PostgreSQL on the wrong port, NATS
// that refuses), returning the path and the busy address.
func e2eBadConfig(t *testing.T, dir string, static, live bool) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %s\n", filepath.Join(dir, "data"))
	if static {
		b.WriteString("server_name: \"https://chat example.com\"\nmax_request_byte: 100000\ndatabase_pool: lots\n")
	}
	if live {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { busy.Close() })
		fmt.Fprintf(&b, "listen: %s\n", busy.Addr())
		b.WriteString("database: postgres://haven:hunter2@127.0.0.1:5433/haven?sslmode=disable\n")
		fmt.Fprintf(&b, "nats:\n  url: nats://%s\n", e2eFreeAddr(t))
	} else {
		fmt.Fprintf(&b, "listen: %s\n", e2eFreeAddr(t))
	}
	path := filepath.Join(dir, "haven.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheckConfigReportsEveryProblem(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := e2eBadConfig(t, dir, true, true)
	cfgText, _ := os.ReadFile(path)
	stdout, stderr, code := e2eRun(t, dir, e2eEnv(), "check-config", "--config", path)
	if code == 0 {
		t.Fatalf("check-config exited 0:\n%s", stdout)
	}
	out := stdout + stderr
	if strings.Contains(out, "hunter2") {
		t.Fatalf("the password was printed:\n%s", out)
	}
	busy := regexp.MustCompile(`listen: (\S+)`).FindStringSubmatch(string(cfgText))[1]
	natsURL := regexp.MustCompile(`url: (\S+)`).FindStringSubmatch(string(cfgText))[1]
	want := []string{
		"max_request_byte — unknown key (line 3)\n  Fix: did you mean \"max_request_bytes\"?",
		"database_pool: lots — must be a whole number (line 4)",
		"server_name: https://chat example.com — is not a valid server name",
		"database: postgres://haven:xxxxx@127.0.0.1:5433/haven?sslmode=disable — connection refused\n  Fix: is PostgreSQL running on 127.0.0.1? Its default port is 5432, this URL says 5433.",
		"nats.url: " + natsURL + " — does not answer: connection refused",
		"listen: " + busy + " — the port is already in use",
	}
	for _, w := range want {
		if !strings.Contains(stdout, w) {
			t.Errorf("check-config output lacks %q:\n%s", w, stdout)
		}
	}
	blocks := e2eProblemBlocks(t, stdout)
	if len(blocks) != len(want) {
		t.Errorf("want %d problems, got %d:\n%s", len(want), len(blocks), stdout)
	}
	if m := e2eProblemCount.FindStringSubmatch(stdout); m == nil || m[1] != strconv.Itoa(len(blocks)) {
		t.Errorf("the header does not count the problems:\n%s", stdout)
	}
}

func TestCheckConfigMissingDatabase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "haven.yaml")
	body := fmt.Sprintf("listen: %s\ndata_dir: %s\ndatabase: postgres://postgres@127.0.0.1:5432/haven_missing_db?sslmode=disable\n", e2eFreeAddr(t), filepath.Join(dir, "data"))
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, _, code := e2eRun(t, dir, e2eEnv(), "check-config", "--config", path)
	if code == 0 {
		t.Fatalf("check-config exited 0:\n%s", stdout)
	}
	for _, w := range []string{"the database haven_missing_db does not exist", "Fix: create it: createdb -O postgres -E UTF8 --locale=C -T template0 haven_missing_db"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("output lacks %q:\n%s", w, stdout)
		}
	}
	if n := len(e2eProblemBlocks(t, stdout)); n != 1 {
		t.Errorf("want 1 problem, got %d:\n%s", n, stdout)
	}
}

func TestCheckConfigGood(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "haven.yaml")
	body := fmt.Sprintf(`server_name: chat.example.com
listen: %s
data_dir: %s
database: %s
nats:
  url: nats://127.0.0.1:4222
metrics:
  listen: %s
logging:
  format: json
registration:
  shared_secret: short
`, e2eFreeAddr(t), filepath.Join(dir, "data"), storagetest.NewSchema(t), e2eFreeAddr(t))
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := e2eRun(t, dir, e2eEnv(), "check-config", "--config", path)
	if code != 0 {
		t.Fatalf("check-config exited %d:\n%s%s", code, stdout, stderr)
	}
	if !strings.HasPrefix(stdout, "Configuration OK: server name chat.example.com") || !strings.Contains(stdout, "NATS nats://127.0.0.1:4222") {
		t.Fatalf("output:\n%s", stdout)
	}
	// A short shared secret (test harnesses use them) is a warning, not a problem.
	if !strings.Contains(stdout, "warning: registration.shared_secret is 5 characters long") {
		t.Fatalf("no warning about the short shared secret:\n%s", stdout)
	}
}

// TestCheckConfigExposureWarnings: a client listener on every interface
// over plain HTTP, and a configuration file with secrets that other users
// may read, are warned about.
func TestCheckConfigExposureWarnings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "haven.yaml")
	_, port, _ := net.SplitHostPort(e2eFreeAddr(t))
	body := fmt.Sprintf(`server_name: chat.example.com
listen: 0.0.0.0:%s
data_dir: %s
database: %s
registration:
  shared_secret: 0123456789abcdef0123456789abcdef
`, port, filepath.Join(dir, "data"), storagetest.NewSchema(t))
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	stdout, stderr, code := e2eRun(t, dir, e2eEnv(), "check-config", "--config", path)
	if code != 0 {
		t.Fatalf("check-config exited %d:\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"warning: listen is 0.0.0.0:" + port + ": the client API is served over plain HTTP on every interface",
		"warning: " + path + " holds secrets and is readable by other users (mode 0644): run `chmod 600 " + path + "`"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("missing %q in:\n%s", want, stdout)
		}
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if stdout, _, _ := e2eRun(t, dir, e2eEnv(), "check-config", "--config", path); strings.Contains(stdout, "readable by other users") {
		t.Errorf("mode 0600 still warned about:\n%s", stdout)
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		static, live bool
	}{
		{"static problems", true, false},
		{"live problems", false, true},
		{"both", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := e2eBadConfig(t, dir, tc.static, tc.live)
			checkOut, _, code := e2eRun(t, dir, e2eEnv(), "check-config", "--config", path)
			if code == 0 {
				t.Fatalf("check-config accepted the file:\n%s", checkOut)
			}
			p := e2eStart(t, dir, e2eEnv(), "serve", "--config", path)
			if code := p.wait(t, time.Minute); code == 0 {
				t.Fatalf("serve exited 0\nstdout:\n%s\nstderr:\n%s", p.stdout, p.stderr)
			}
			if p.stdout.String() != "" {
				t.Errorf("serve printed a startup line: %q", p.stdout)
			}
			serveOut := p.stderr.String()
			if strings.Contains(serveOut, "hunter2") {
				t.Errorf("password printed:\n%s", serveOut)
			}
			// serve reports the file's own mistakes first; the database, NATS
			// and ports are tried only once the file is right.
			served := e2eProblemBlocks(t, serveOut)
			if len(served) == 0 {
				t.Fatalf("serve printed no problems:\n%s", serveOut)
			}
			for _, b := range served {
				if !strings.Contains(checkOut, b) {
					t.Errorf("serve says %q, which check-config does not:\n%s", b, checkOut)
				}
			}
			if !tc.static && len(served) != len(e2eProblemBlocks(t, checkOut)) {
				t.Errorf("serve and check-config disagree:\n%s\nvs\n%s", serveOut, checkOut)
			}
			if _, err := os.Stat(filepath.Join(dir, "data", "haven.db")); err == nil {
				t.Errorf("serve created a database although the configuration is bad")
			}
		})
	}
}

func TestGeneratedConfigPassesCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	template, _, code := e2eRun(t, dir, e2eEnv(), "generate-config")
	if code != 0 || !strings.Contains(template, "server_name:") {
		t.Fatalf("generate-config: %d\n%s", code, template)
	}
	path := filepath.Join(dir, "haven.yaml")
	if err := os.WriteFile(path, []byte(template), 0o600); err != nil {
		t.Fatal(err)
	}
	// The file is used as generated. Only the port comes from the environment,
	// so the test does not depend on 8008 being free on this machine.
	stdout, stderr, code := e2eRun(t, dir, e2eEnv("HAVEN_LISTEN="+e2eFreeAddr(t)), "check-config", "--config", path)
	if code != 0 {
		t.Fatalf("check-config on the generated file exited %d:\n%s%s", code, stdout, stderr)
	}
	if !strings.HasPrefix(stdout, "Configuration OK: server name localhost") || !strings.Contains(stdout, "database sqlite:haven-data/haven.db") {
		t.Fatalf("output:\n%s", stdout)
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	ms, err := storage.Migrations()
	if err != nil || len(ms) == 0 {
		t.Fatalf("embedded migrations: %v", err)
	}
	last := ms[len(ms)-1].Version
	for _, tc := range []struct {
		name string
		// database returns the setting and how migrate names it.
		database func(t *testing.T, dir string) (setting, location string)
	}{
		{"sqlite", func(t *testing.T, dir string) (string, string) {
			path := filepath.Join(dir, "db", "haven.db")
			return "sqlite://" + path, "sqlite:" + path
		}},
		{"postgres", func(t *testing.T, dir string) (string, string) {
			u := storagetest.NewSchema(t)
			return u, storage.RedactURL(u)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			setting, location := tc.database(t, dir)
			env := e2eEnv("HAVEN_DATABASE=" + setting)
			versionLine := fmt.Sprintf("is at schema version %d\n", last)

			if tc.name == "postgres" {
				// A dry run lists every migration and applies none.
				stdout, stderr, code := e2eRun(t, dir, env, "migrate", "--dry-run")
				if code != 0 || !strings.Contains(stdout, fmt.Sprintf("%d migration(s) pending", len(ms))) ||
					strings.Count(stdout, "would apply ") != len(ms) {
					t.Fatalf("migrate --dry-run exited %d:\n%s%s", code, stdout, stderr)
				}
			}
			stdout, stderr, code := e2eRun(t, dir, env, "migrate")
			if code != 0 {
				t.Fatalf("migrate exited %d:\n%s%s", code, stdout, stderr)
			}
			for _, m := range ms {
				if !strings.Contains(stdout, "applied "+m.Name+"\n") {
					t.Errorf("first run does not report %s:\n%s", m.Name, stdout)
				}
			}
			if !strings.HasSuffix(stdout, "database "+location+" "+versionLine) {
				t.Errorf("first run does not report the version:\n%s", stdout)
			}

			stdout, stderr, code = e2eRun(t, dir, env, "migrate")
			if code != 0 {
				t.Fatalf("second migrate exited %d:\n%s%s", code, stdout, stderr)
			}
			if strings.Contains(stdout, "applied") || !strings.HasSuffix(stdout, versionLine) || strings.Count(stdout, "\n") != 1 {
				t.Errorf("second run should apply nothing:\n%s", stdout)
			}
			stdout, stderr, code = e2eRun(t, dir, env, "migrate", "--dry-run")
			if code != 0 || !strings.Contains(stdout, "0 migration(s) pending") {
				t.Errorf("dry run after migrating exited %d:\n%s%s", code, stdout, stderr)
			}
		})
	}
}

func TestMetricsListener(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr, metricsAddr := e2eFreeAddr(t), e2eFreeAddr(t)
	p := e2eServe(t, dir, addr, e2eEnv("HAVEN_LISTEN="+addr, "HAVEN_METRICS_LISTEN="+metricsAddr))

	if status, _, body := e2eMustGet(t, "http://"+addr+"/_matrix/client/versions"); status != 200 {
		t.Fatalf("/versions: %d %s", status, body)
	}
	var metricsText string
	e2eEventually(t, p, 30*time.Second, "/metrics counts the request", func() error {
		status, h, body, err := e2eGet("http://" + metricsAddr + "/metrics")
		if err != nil {
			return err
		}
		if status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
			return fmt.Errorf("status %d, Content-Type %q", status, h.Get("Content-Type"))
		}
		if !strings.Contains(body, `haven_http_requests_total{code="200",method="GET",route="/_matrix/client/versions"}`) {
			return errors.New("haven_http_requests_total has no /versions request yet")
		}
		metricsText = body
		return nil
	})
	for _, name := range []string{
		"haven_http_request_duration_seconds_bucket",
		"haven_sync_waiters",
		"haven_events_persisted_total",
		`haven_db_connections_open{pool=`,
		"haven_handler_panics_total",
		`haven_build_info{version="`,
		"haven_disk_free_bytes",
		"haven_disk_total_bytes",
		"go_goroutines",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name)).MatchString(metricsText) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	if strings.Contains(metricsText, `haven_build_info{version="dev"}`) || strings.Contains(metricsText, `haven_build_info{version=""}`) {
		t.Errorf("the build's version is not read from the build information")
	}
	stdout, _, _ := e2eRun(t, t.TempDir(), e2eEnv(), "--version")
	if v := strings.TrimPrefix(strings.TrimSpace(stdout), "haven "); v == "" || !strings.Contains(metricsText, `haven_build_info{version="`+v+`"} 1`) {
		t.Errorf("haven --version says %q; /metrics has another version", stdout)
	}

	status, h, body := e2eMustGet(t, "http://"+addr+"/metrics")
	if status != 404 || e2eMatrixError(t, h, body) != "M_UNRECOGNIZED" {
		t.Errorf("/metrics on the public listener: %d %q", status, body)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit code %d\nstderr:\n%s", code, p.stderr)
	}
}

// e2ePost sends a JSON body and decodes the JSON answer.
func e2ePost(t *testing.T, rawURL, token string, body any) (int, map[string]any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", rawURL, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e2eClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("POST %s: answer is not JSON: %v", rawURL, err)
	}
	return resp.StatusCode, out
}

func TestCreateUserThenLogIn(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr := e2eFreeAddr(t)
	const password = "correct horse battery staple"
	// A low bcrypt cost keeps the test fast; serve warns about it.
	env := e2eEnv("HAVEN_LISTEN="+addr, "HAVEN_PASSWORD_HASH_COST=4")

	// Before the server's first start there is no database: create-user
	// says so instead of making one the server might never use.
	stdout, stderr, code := e2eRun(t, dir, env, "create-user", "--user", "alice", "--password", password, "--admin")
	if code != 1 || !strings.Contains(stderr, "there is no database at "+filepath.Join(dir, "haven-data", "haven.db")) || !strings.Contains(stderr, "Fix:") {
		t.Fatalf("create-user before the first start: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "haven-data")); !os.IsNotExist(err) {
		t.Fatalf("create-user made haven-data: %v", err)
	}

	p := e2eServe(t, dir, addr, env)
	stdout, stderr, code = e2eRun(t, dir, env, "create-user", "--user", "alice", "--password", password, "--admin")
	if code != 0 || stdout != "@alice:localhost\n" {
		t.Fatalf("create-user: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, password) {
		t.Fatalf("create-user printed the password:\n%s%s", stdout, stderr)
	}
	if !strings.Contains(stderr, "audit_action=account.registered") {
		t.Errorf("no audit line for the new account:\n%s", stderr)
	}

	stdout, stderr, code = e2eRun(t, dir, env, "create-user", "--user", "alice", "--password", "another password")
	if code == 0 || !strings.Contains(stderr, "M_USER_IN_USE") {
		t.Errorf("a second alice: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if _, stderr, code = e2eRun(t, dir, env, "create-user", "--user", "bob"); code != 1 || !strings.Contains(stderr, "no password on standard input") {
		t.Errorf("create-user without a password: exit %d\n%s", code, stderr)
	}
	if _, stderr, code = e2eRun(t, dir, env, "create-user", "--user", "bob", "--password", "password2024"); code != 1 || !strings.Contains(stderr, "M_WEAK_PASSWORD") {
		t.Errorf("create-user with a common password: exit %d\n%s", code, stderr)
	}

	status, login := e2ePost(t, "http://"+addr+"/_matrix/client/v3/login", "", map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": "alice"},
		"password":   password,
	})
	token, _ := login["access_token"].(string)
	if status != 200 || token == "" || login["user_id"] != "@alice:localhost" {
		t.Fatalf("login: %d %v", status, login)
	}
	status, h, body := func() (int, http.Header, string) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/_matrix/client/v3/account/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := e2eClient.Do(req)
		if err != nil {
			t.Fatalf("whoami: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}()
	if status != 200 || !strings.Contains(body, `"user_id":"@alice:localhost"`) {
		t.Fatalf("whoami: %d %v %s", status, h, body)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit code %d\nstderr:\n%s", code, p.stderr)
	}
	logs := p.stderr.String()
	if strings.Contains(logs, token) || strings.Contains(logs, password) {
		t.Fatalf("the token or the password reached the log:\n%s", logs)
	}
	if !strings.Contains(logs, `user_id="@alice:localhost"`) {
		t.Errorf("the access log does not name the user:\n%s", logs)
	}
}

// A bad application service registration is a configuration problem:
// check-config lists it (with the unreadable file beside it) and serve
// refuses to start.
func TestCheckConfigAppServices(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(bad, []byte("id: bridge\nurl: http://127.0.0.1:1\nas_token: a\nnamespaces:\n  users: [{exclusive: true, regex: \"@_b_(\"}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "haven.yaml")
	body := fmt.Sprintf("listen: %s\ndata_dir: %s\napp_services: [%s, %s]\n", e2eFreeAddr(t), filepath.Join(dir, "data"), bad, filepath.Join(dir, "missing.yaml"))
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, _, code := e2eRun(t, dir, e2eEnv(), "check-config", "--config", path)
	if code == 0 {
		t.Fatalf("check-config exited 0:\n%s", stdout)
	}
	for _, w := range []string{
		"app_services: " + bad + " — has no hs_token",
		"app_services: " + bad + " — has no sender_localpart",
		"is not a valid regular expression",
		"app_services: " + filepath.Join(dir, "missing.yaml") + " — the registration file cannot be read: no such file or directory",
	} {
		if !strings.Contains(stdout, w) {
			t.Errorf("check-config output lacks %q:\n%s", w, stdout)
		}
	}
	if n := len(e2eProblemBlocks(t, stdout)); n != 4 {
		t.Errorf("want 4 problems, got %d:\n%s", n, stdout)
	}
	p := e2eStart(t, dir, e2eEnv(), "serve", "--config", path)
	if code := p.wait(t, time.Minute); code == 0 {
		t.Fatalf("serve started with a bad registration file")
	}
	if !strings.Contains(p.stderr.String(), "has no hs_token") {
		t.Errorf("serve does not say why:\n%s", p.stderr)
	}
}
