package httpx

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// serveHandoff starts an HTTP server on a loopback Handoff.
func serveHandoff(t *testing.T, newWait, idleWait time.Duration, h func(*Handoff) http.HandlerFunc) *Handoff {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ho := NewHandoff(l, newWait, idleWait)
	srv := &http.Server{Handler: h(ho), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ho)
	t.Cleanup(func() { ho.Close(); srv.Close() })
	return ho
}

func plain(*Handoff) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok "+r.URL.Path) }
}

// eventually polls cond; the limit only keeps a broken build from hanging.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("never happened: %s", what)
}

func dial(t *testing.T, h *Handoff) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", h.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// get sends one request on c and returns the body of the answer.
func get(t *testing.T, c net.Conn, br *bufio.Reader, path string) string {
	t.Helper()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func needSet(t *testing.T, h *Handoff) {
	if h.idle == nil {
		t.Skip("connections cannot wait in a set on this system")
	}
}

func TestSilentConnectionsHoldNoGoroutine(t *testing.T) {
	h := serveHandoff(t, time.Minute, time.Minute, plain)
	needSet(t, h)
	const n = 300
	before := runtime.NumGoroutine()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dial(t, h)
	}
	eventually(t, "all connections wait in the set", func() bool { return h.Waiting() == n })
	if grown := runtime.NumGoroutine() - before; grown > n/10 {
		t.Fatalf("%d silent connections started %d goroutines", n, grown)
	}
	for i, c := range conns {
		if got, want := get(t, c, bufio.NewReader(c), "/a"), "ok /a"; got != want {
			t.Fatalf("connection %d answered %q, want %q", i, got, want)
		}
	}
	if w := h.Waiting(); w != 0 {
		t.Fatalf("%d connections still wait after sending their requests", w)
	}
}

func TestParkedConnectionWaitsForItsNextRequest(t *testing.T) {
	h := serveHandoff(t, time.Minute, time.Minute, func(h *Handoff) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/park" {
				io.WriteString(w, "ok "+r.URL.Path)
				return
			}
			p, err := h.Park(w, r, func() {})
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			go p.Answer(http.StatusOK, []byte("answered later"))
		}
	})
	needSet(t, h)
	c := dial(t, h)
	br := bufio.NewReader(c)
	if got := get(t, c, br, "/park"); got != "answered later" {
		t.Fatalf("parked request answered %q", got)
	}
	eventually(t, "the connection waits in the set after the answer", func() bool { return h.Waiting() == 1 })
	if got := get(t, c, br, "/next"); got != "ok /next" {
		t.Fatalf("next request on the same connection answered %q", got)
	}
}

func TestSilentConnectionIsClosedAtItsDeadline(t *testing.T) {
	h := serveHandoff(t, 50*time.Millisecond, time.Minute, plain)
	needSet(t, h)
	c := dial(t, h)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read on a connection silent past its deadline: %v, want EOF", err)
	}
	if w := h.Waiting(); w != 0 {
		t.Fatalf("%d connections still wait", w)
	}
}

func TestPeerHangingUpLeavesTheSet(t *testing.T) {
	h := serveHandoff(t, time.Minute, time.Minute, plain)
	needSet(t, h)
	c := dial(t, h)
	eventually(t, "the connection waits", func() bool { return h.Waiting() == 1 })
	c.Close()
	eventually(t, "the hung-up connection leaves the set", func() bool { return h.Waiting() == 0 })
}

func TestCloseClosesWaitingConnections(t *testing.T) {
	h := serveHandoff(t, time.Minute, time.Minute, plain)
	needSet(t, h)
	c := dial(t, h)
	eventually(t, "the connection waits", func() bool { return h.Waiting() == 1 })
	h.Close()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read after Close: %v, want EOF", err)
	}
	if _, err := net.Dial("tcp", h.Addr().String()); err == nil {
		t.Fatal("the listener still accepts after Close")
	}
}
