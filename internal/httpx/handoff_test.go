package httpx

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
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
	srv := &http.Server{Handler: h(ho), ReadHeaderTimeout: 10 * time.Second, ConnState: ho.ConnState, ConnContext: ho.ConnContext}
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

// oneWaiting starts a server with one silent connection waiting in its set.
func oneWaiting(t *testing.T) (*Handoff, net.Conn) {
	t.Helper()
	h := serveHandoff(t, time.Minute, time.Minute, plain)
	needSet(t, h)
	c := dial(t, h)
	eventually(t, "the connection waits", func() bool { return h.Waiting() == 1 })
	return h, c
}

func TestPeerHangingUpLeavesTheSet(t *testing.T) {
	h, c := oneWaiting(t)
	c.Close()
	eventually(t, "the hung-up connection leaves the set", func() bool { return h.Waiting() == 0 })
}

func TestCloseClosesWaitingConnections(t *testing.T) {
	h, c := oneWaiting(t)
	h.Close()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read after Close: %v, want EOF", err)
	}
	if c2, err := net.Dial("tcp", h.Addr().String()); err == nil {
		c2.Close()
		t.Fatal("the listener still accepts after Close")
	}
}

// serveAdmission starts a server whose Handoff has the given slots and
// longest wait, with its hooks installed as the app installs them.
func serveAdmission(t *testing.T, slots int, maxDelay time.Duration, handler http.HandlerFunc) *Handoff {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := newHandoff(l, time.Minute, time.Minute, slots, maxDelay)
	needSet(t, h)
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ConnState: h.ConnState, ConnContext: h.ConnContext}
	go srv.Serve(h)
	t.Cleanup(func() { h.Close(); srv.Close() })
	return h
}

// blocking is a handler that counts the requests inside it and holds them
// until release is closed; with free set, a request gives back its slot
// before it waits.
type blocking struct {
	mu             sync.Mutex
	inside, most   int
	release        chan struct{}
	freeBeforeWait bool
}

func (b *blocking) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if b.freeBeforeWait {
		ReleaseSlot(r.Context())
	}
	b.mu.Lock()
	b.inside++
	b.most = max(b.most, b.inside)
	b.mu.Unlock()
	<-b.release
	b.mu.Lock()
	b.inside--
	b.mu.Unlock()
	io.WriteString(w, "ok")
}

func (b *blocking) counts() (inside, most int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inside, b.most
}

// sendAll sends one request on each of n new connections and returns a
// channel that yields each answer's body.
func sendAll(t *testing.T, h *Handoff, n int) <-chan string {
	out := make(chan string, n)
	for i := 0; i < n; i++ {
		c := dial(t, h)
		go func() {
			if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				out <- err.Error()
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				out <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			out <- string(b)
		}()
	}
	return out
}

func TestAdmissionBoundsRequestsInFlight(t *testing.T) {
	b := &blocking{release: make(chan struct{})}
	h := serveAdmission(t, 4, time.Hour, b.ServeHTTP)
	answers := sendAll(t, h, 20)
	eventually(t, "four requests reach the handler", func() bool { in, _ := b.counts(); return in == 4 })
	// The other sixteen are readable, but have no slot.
	time.Sleep(100 * time.Millisecond)
	if _, most := b.counts(); most != 4 {
		t.Fatalf("%d requests were inside the handler at once with 4 slots", most)
	}
	close(b.release)
	for i := 0; i < 20; i++ {
		if got := <-answers; got != "ok" {
			t.Fatalf("answer %d: %q", i, got)
		}
	}
}

func TestAdmissionRetiresSlotsHeldTooLong(t *testing.T) {
	b := &blocking{release: make(chan struct{})}
	defer close(b.release)
	h := serveAdmission(t, 1, 20*time.Millisecond, b.ServeHTTP)
	sendAll(t, h, 3)
	// One slot, held for ever by each request in turn: each is retired after
	// 20 ms, and the other requests still reach the server.
	eventually(t, "all three requests reach the handler", func() bool { in, _ := b.counts(); return in == 3 })
}

func TestWaitingRequestGivesBackItsSlot(t *testing.T) {
	b := &blocking{release: make(chan struct{}), freeBeforeWait: true}
	defer close(b.release)
	h := serveAdmission(t, 1, time.Hour, b.ServeHTTP)
	sendAll(t, h, 5)
	eventually(t, "every waiting request reaches the handler", func() bool { in, _ := b.counts(); return in == 5 })
}

func TestDeliveryAfterCloseClosesTheConnection(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandoff(l, time.Minute, time.Minute)
	h.Close()
	for i := 0; i < 20; i++ { // deliver chose at random between its cases before
		ours, theirs := net.Pipe()
		h.deliver(ours)
		_ = theirs.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := theirs.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("delivery %d after Close: read %v, want EOF (the connection was left open)", i, err)
		}
	}
}
