package sytest

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"

	"github.com/haven-chat/haven/storage/storagetest"
)

// dbProxy forwards TCP connections to PostgreSQL until it is cut, when it
// drops every connection and refuses new ones: the database going away
// under a running server.
type dbProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startDBProxy(t *testing.T, target string) *dbProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dbProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(p.cut)
	return p
}

func (p *dbProxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func readiness(t *testing.T, s *server, path string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(s.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// TestHealth: /health/live answers while the process runs; /health/ready
// (and /health) answer 200 with the checks while the database, the bus
// and the disk are fine, and 503 naming the database once it refuses
// connections.
func TestHealth(t *testing.T) {
	u, err := url.Parse(storagetest.NewSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := startDBProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	s := startServer(t, "sqlite", "HAVEN_DATABASE="+u.String())

	code, body := readiness(t, s, "/health/ready")
	checks, _ := body["checks"].(map[string]any)
	if code != 200 || body["ready"] != true || len(checks) != 3 {
		t.Fatalf("ready: %d %v", code, body)
	}
	for _, name := range []string{"database", "nats", "disk"} {
		if c, _ := checks[name].(map[string]any); c == nil || c["ok"] != true {
			t.Fatalf("check %s: %v", name, checks[name])
		}
	}
	if code, _ := readiness(t, s, "/health/live"); code != 200 {
		t.Fatalf("live: %d", code)
	}

	proxy.cut()
	waitUntil(t, "readiness to see the database gone", func() bool {
		code, body := readiness(t, s, "/health/ready")
		checks, _ := body["checks"].(map[string]any)
		db, _ := checks["database"].(map[string]any)
		return code == 503 && body["ready"] == false && db != nil && db["ok"] == false
	})
	if code, _ := readiness(t, s, "/health"); code != 503 {
		t.Fatalf("/health with the database gone: %d", code)
	}
	if code, _ := readiness(t, s, "/health/live"); code != 200 {
		t.Fatalf("live with the database gone: %d", code)
	}
}
