package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/logging"
)

// TestParkedSyncs: waiting /sync requests hold no goroutine and little
// memory; a message answers them, and their connections carry the next
// request as usual.
func TestParkedSyncs(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.PasswordHashCost = 4
	cfg.RateLimits.Enabled = false
	cfg.PasswordPolicy = config.PasswordPolicy{MinLength: 1} // the test's accounts have short passwords
	cfg.Registration.Open = true
	log, _ := logging.New("text", "error", io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.api.ParkAbove = 0 // park every waiting /sync
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { _ = a.Serve(ctx); close(served) }()
	defer func() { cancel(); <-served }()
	base := "http://" + a.Addr()
	call := func(method, path, token, body string, out any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		if out != nil {
			_ = json.NewDecoder(resp.Body).Decode(out)
		}
	}
	var reg struct {
		AccessToken string `json:"access_token"`
	}
	call("POST", "/_matrix/client/v3/register", "", `{"username":"u1","password":"p","auth":{"type":"m.login.dummy"}}`, &reg)
	var room struct {
		RoomID string `json:"room_id"`
	}
	call("POST", "/_matrix/client/v3/createRoom", reg.AccessToken, `{}`, &room)
	var s struct {
		NextBatch string `json:"next_batch"`
	}
	call("GET", "/_matrix/client/v3/sync", reg.AccessToken, "", &s)
	call("GET", "/_matrix/client/v3/sync?timeout=50&since="+s.NextBatch, reg.AccessToken, "", &s)

	runtime.GC()
	before := runtime.NumGoroutine()
	const n = 300
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range conns {
		c, err := net.Dial("tcp", a.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /_matrix/client/v3/sync?since=%s&timeout=60000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", s.NextBatch, reg.AccessToken)
		conns[i], readers[i] = c, bufio.NewReader(c)
	}
	deadline := time.Now().Add(20 * time.Second)
	for a.Sync.Notifier().Waiting() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if w := a.Sync.Notifier().Waiting(); w < n {
		t.Fatalf("%d syncs waiting, want %d", w, n)
	}
	if g := runtime.NumGoroutine() - before; g > n/10 {
		t.Fatalf("%d waiting syncs hold %d goroutines", n, g)
	}
	// A message answers every parked sync...
	call("PUT", "/_matrix/client/v3/rooms/"+room.RoomID+"/send/m.room.message/t1", reg.AccessToken, `{"msgtype":"m.text","body":"wake"}`, nil)
	for i, r := range readers {
		_ = conns[i].SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"wake"`) {
			t.Fatalf("sync %d: %d %s", i, resp.StatusCode, body)
		}
	}
	// ...and each connection serves the next request.
	for i, c := range conns[:10] {
		fmt.Fprintf(c, "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(readers[i], nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("next request on connection %d: %v", i, err)
		}
		resp.Body.Close()
	}
}
