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

// TestParkedSliding: waiting sliding sync requests (each its own
// connection, conn_id and pos) park as /syncs do: no goroutine each; a
// message answers every one with it. It logs the heap each connection
// (its snapshots) and each parked request holds.
func TestParkedSliding(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.PasswordHashCost = 4
	cfg.RateLimits.Enabled = false
	cfg.PasswordPolicy = config.PasswordPolicy{MinLength: 1}
	cfg.Registration.Open = true
	log, _ := logging.New("text", "error", io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.api.ParkAbove = 0
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { _ = a.Serve(ctx); close(served) }()
	defer func() { cancel(); <-served }()
	base := "http://" + a.Addr()
	const path = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
	call := func(method, p, token, body string, out any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+p, strings.NewReader(body))
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
			t.Fatalf("%s %s: %d %s", method, p, resp.StatusCode, b)
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
	call("POST", "/_matrix/client/v3/createRoom", reg.AccessToken, `{"name":"R"}`, &room)

	const n = 200
	body := func(i int) string {
		return fmt.Sprintf(`{"conn_id":"c%d","lists":{"all":{"ranges":[[0,19]],"timeline_limit":1,"required_state":[["m.room.name",""],["m.room.member","$ME"]]}},"extensions":{"e2ee":{"enabled":true},"to_device":{"enabled":true}}}`, i)
	}
	runtime.GC()
	var mc runtime.MemStats
	runtime.ReadMemStats(&mc)
	pos := make([]string, n)
	for i := range pos {
		var r struct {
			Pos        string `json:"pos"`
			Extensions struct {
				ToDevice struct {
					NextBatch string `json:"next_batch"`
				} `json:"to_device"`
			} `json:"extensions"`
		}
		call("POST", path, reg.AccessToken, body(i), &r)
		pos[i] = r.Pos
	}
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	t.Logf("%d idle sliding connections: %d bytes of heap each", n, (int64(m0.HeapInuse)-int64(mc.HeapInuse))/n)
	before := runtime.NumGoroutine()
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range conns {
		c, err := net.Dial("tcp", a.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b := body(i)
		fmt.Fprintf(c, "POST %s?pos=%s&timeout=60000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, pos[i], reg.AccessToken, len(b), b)
		conns[i], readers[i] = c, bufio.NewReader(c)
	}
	deadline := time.Now().Add(20 * time.Second)
	for a.Sync.Notifier().Waiting() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if w := a.Sync.Notifier().Waiting(); w < n {
		t.Fatalf("%d sliding syncs waiting, want %d", w, n)
	}
	if g := runtime.NumGoroutine() - before; g > n/10 {
		t.Fatalf("%d waiting sliding syncs hold %d goroutines", n, g)
	}
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	t.Logf("%d parked sliding syncs: %d bytes of heap each", n, (int64(m1.HeapInuse)-int64(m0.HeapInuse))/n)

	call("PUT", "/_matrix/client/v3/rooms/"+room.RoomID+"/send/m.room.message/t1", reg.AccessToken, `{"msgtype":"m.text","body":"wake"}`, nil)
	for i, r := range readers {
		_ = conns[i].SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("sliding sync %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"wake"`) {
			t.Fatalf("sliding sync %d: %d %s", i, resp.StatusCode, b)
		}
	}
}
