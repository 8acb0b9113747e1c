package keys

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/storage"
)

// clock is a settable clock shared by a test's servers and store.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newKey(t testing.TB, id string) serverkey.Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return serverkey.Key{ID: gomatrixserverlib.KeyID(id), Private: priv}
}

// keyServer is another server's key endpoint on loopback.
type keyServer struct {
	srv *Server
	url string
}

func startKeyServer(t testing.TB, self Identity, cfg ServerConfig) *keyServer {
	t.Helper()
	cfg.Self = self
	srv := NewServer(cfg)
	r := chi.NewRouter()
	srv.Routes(r)
	hs := httptest.NewServer(r)
	t.Cleanup(hs.Close)
	return &keyServer{srv: srv, url: hs.URL}
}

// httpFetcher fetches keys over HTTP from the servers it knows, counting
// fetches. gate, when set, holds every fetch until it is closed; mangle,
// when set, changes the raw answer before it is parsed.
type httpFetcher struct {
	mu     sync.Mutex
	urls   map[string]string
	gate   chan struct{}
	mangle func([]byte) []byte
	count  atomic.Int64
}

func newHTTPFetcher() *httpFetcher { return &httpFetcher{urls: map[string]string{}} }

func (f *httpFetcher) add(server, url string) {
	f.mu.Lock()
	f.urls[server] = url
	f.mu.Unlock()
}

func (f *httpFetcher) ServerKeys(ctx context.Context, server string) (gomatrixserverlib.ServerKeys, error) {
	f.count.Add(1)
	f.mu.Lock()
	u, ok := f.urls[server]
	gate, mangle := f.gate, f.mangle
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return gomatrixserverlib.ServerKeys{}, ctx.Err()
		}
	}
	if !ok {
		return gomatrixserverlib.ServerKeys{}, errors.New("no such server")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/_matrix/key/v2/server", nil)
	if err != nil {
		return gomatrixserverlib.ServerKeys{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return gomatrixserverlib.ServerKeys{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return gomatrixserverlib.ServerKeys{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return gomatrixserverlib.ServerKeys{}, fmt.Errorf("status %d", resp.StatusCode)
	}
	if mangle != nil {
		body = mangle(body)
	}
	var keys gomatrixserverlib.ServerKeys
	if err := keys.UnmarshalJSON(body); err != nil {
		return gomatrixserverlib.ServerKeys{}, err
	}
	return keys, nil
}

// signed returns a small JSON object signed by server with key.
func signed(t testing.TB, server string, key serverkey.Key, body string) []byte {
	t.Helper()
	out, err := gomatrixserverlib.SignJSON(server, key.ID, key.Private, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// verify runs one VerifyJSONs request and returns its result error.
func verify(t testing.TB, s *Store, server string, at time.Time, msg []byte) error {
	t.Helper()
	res, err := s.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: spec.ServerName(server), AtTS: spec.AsTimestamp(at), Message: msg,
		ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil {
		t.Fatalf("VerifyJSONs: %v", err)
	}
	if len(res) != 1 {
		t.Fatalf("VerifyJSONs returned %d results", len(res))
	}
	return res[0].Error
}

// eventually polls cond until it holds (the test's own deadline bounds it).
func eventually(cond func() bool) {
	for !cond() {
		time.Sleep(time.Millisecond)
	}
}

func newStore(db *storage.DB, self Identity, f Fetcher, c *clock) *Store {
	return NewStore(db, StoreConfig{Self: self, Fetcher: f, Now: c.Now})
}
