package keys

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// remoteSetup is our server a.test with a store, and b.test's key server.
type remoteSetup struct {
	clock  *clock
	bKey   Identity
	b      *keyServer
	fetch  *httpFetcher
	store  *Store
	db     *storage.DB
	aIdent Identity
}

func setupRemote(t *testing.T, db *storage.DB, validFor time.Duration) *remoteSetup {
	t.Helper()
	c := newClock()
	bIdent := Identity{ServerName: "b.test", Key: newKey(t, "ed25519:b1")}
	b := startKeyServer(t, bIdent, ServerConfig{ValidFor: validFor, Now: c.Now})
	f := newHTTPFetcher()
	f.add("b.test", b.url)
	aIdent := Identity{ServerName: "a.test", Key: newKey(t, "ed25519:a1")}
	return &remoteSetup{clock: c, bKey: bIdent, b: b, fetch: f, db: db, aIdent: aIdent,
		store: newStore(db, aIdent, f, c)}
}

func TestStoreFetchAndCache(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		rs := setupRemote(t, db, time.Hour)
		msg := signed(t, "b.test", rs.bKey.Key, `{"hello":"world"}`)
		if err := verify(t, rs.store, "b.test", rs.clock.Now(), msg); err != nil {
			t.Fatalf("good signature refused: %v", err)
		}
		if n := rs.fetch.count.Load(); n != 1 {
			t.Fatalf("fetches = %d, want 1", n)
		}
		// Cached in memory: no second fetch, even for a bad signature.
		if err := verify(t, rs.store, "b.test", rs.clock.Now(), msg); err != nil {
			t.Fatalf("second check: %v", err)
		}
		bad := bytes.Replace(msg, []byte("world"), []byte("there"), 1)
		if err := verify(t, rs.store, "b.test", rs.clock.Now(), bad); err == nil {
			t.Fatal("a changed message passed")
		}
		if n := rs.fetch.count.Load(); n != 1 {
			t.Fatalf("fetches after cached checks = %d, want 1", n)
		}
		// A new store (another process, or a restart) finds the keys in the database.
		fresh := newStore(db, rs.aIdent, rs.fetch, rs.clock)
		if err := verify(t, fresh, "b.test", rs.clock.Now(), msg); err != nil {
			t.Fatalf("check from the database: %v", err)
		}
		if n := rs.fetch.count.Load(); n != 1 {
			t.Fatalf("fetches after a check from the database = %d, want 1", n)
		}
	})
}

func TestStoreExpiryRefetch(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		rs := setupRemote(t, db, time.Hour)
		msg := signed(t, "b.test", rs.bKey.Key, `{"a":1}`)
		if err := verify(t, rs.store, "b.test", rs.clock.Now(), msg); err != nil {
			t.Fatal(err)
		}
		// Within the validity: an old message needs nothing new.
		rs.clock.Advance(30 * time.Minute)
		if err := verify(t, rs.store, "b.test", rs.clock.Now(), msg); err != nil {
			t.Fatal(err)
		}
		if n := rs.fetch.count.Load(); n != 1 {
			t.Fatalf("fetches within validity = %d, want 1", n)
		}
		// Past it: a message of now needs the refreshed keys.
		rs.clock.Advance(time.Hour)
		if err := verify(t, rs.store, "b.test", rs.clock.Now(), msg); err != nil {
			t.Fatalf("after expiry: %v", err)
		}
		if n := rs.fetch.count.Load(); n != 2 {
			t.Fatalf("fetches after expiry = %d, want 2", n)
		}
	})
}

// A published validity beyond seven days counts as seven days after the fetch.
func TestStoreCapsValidity(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		rs := setupRemote(t, db, 30*24*time.Hour)
		start := rs.clock.Now()
		keys, err := rs.store.Keys(context.Background(), "b.test", spec.AsTimestamp(start))
		if err != nil {
			t.Fatal(err)
		}
		k, ok := keys["ed25519:b1"]
		if !ok {
			t.Fatalf("keys = %v", keys)
		}
		if want := spec.AsTimestamp(start.Add(MaxKeyValidity)); k.ValidUntilTS != want {
			t.Fatalf("valid_until_ts = %d, want %d (capped)", k.ValidUntilTS, want)
		}
		var until int64
		if err := db.QueryRow(context.Background(), `SELECT valid_until_ts FROM remote_server_key_responses WHERE server_name = 'b.test'`).Scan(&until); err != nil {
			t.Fatal(err)
		}
		if want := start.Add(30 * 24 * time.Hour).UnixMilli(); until != want {
			t.Fatalf("stored answer's valid_until_ts = %d, want the published %d", until, want)
		}
	})
}

func TestStoreRefusesBadAnswers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		t.Run("bad self-signature", func(t *testing.T) {
			rs := setupRemote(t, db, time.Hour)
			rs.fetch.mangle = func(b []byte) []byte {
				// Changing the validity breaks the signature over it.
				var k gomatrixserverlib.ServerKeys
				if err := k.UnmarshalJSON(b); err != nil {
					t.Error(err)
				}
				old := []byte(`"valid_until_ts":` + itoa(int64(k.ValidUntilTS)))
				return bytes.Replace(b, old, []byte(`"valid_until_ts":`+itoa(int64(k.ValidUntilTS)+1)), 1)
			}
			msg := signed(t, "b.test", rs.bKey.Key, `{}`)
			if err := verify(t, rs.store, "b.test", rs.clock.Now(), msg); err == nil || !strings.Contains(err.Error(), "not signed by every key") {
				t.Fatalf("a key from an answer with a bad self-signature: %v", err)
			}
			assertNoKeys(t, db, "b.test")
		})
		t.Run("wrong server_name", func(t *testing.T) {
			c := newClock()
			cIdent := Identity{ServerName: "c.test", Key: newKey(t, "ed25519:c1")}
			cs := startKeyServer(t, cIdent, ServerConfig{Now: c.Now})
			f := newHTTPFetcher()
			f.add("d.test", cs.url) // d.test's address answers as c.test
			s := newStore(db, Identity{ServerName: "a.test", Key: newKey(t, "ed25519:a1")}, f, c)
			msg := signed(t, "d.test", cIdent.Key, `{}`)
			if err := verify(t, s, "d.test", c.Now(), msg); err == nil || !strings.Contains(err.Error(), "server_name") {
				t.Fatalf("a key answered for another server_name: %v", err)
			}
			assertNoKeys(t, db, "d.test")
			assertNoKeys(t, db, "c.test")
		})
		t.Run("expired answer", func(t *testing.T) {
			rs := setupRemote(t, db, time.Hour)
			// The key server's clock is behind ours: its answer is over when it arrives.
			s := NewStore(db, StoreConfig{Self: rs.aIdent, Fetcher: rs.fetch, Now: func() time.Time { return rs.clock.Now().Add(2 * time.Hour) }})
			msg := signed(t, "b.test", rs.bKey.Key, `{}`)
			if err := verify(t, s, "b.test", rs.clock.Now(), msg); err == nil || !strings.Contains(err.Error(), "expired") {
				t.Fatalf("a key from an expired answer: %v", err)
			}
		})
	})
}

func assertNoKeys(t *testing.T, db *storage.DB, server string) {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `SELECT COUNT(*) FROM remote_server_keys WHERE server_name = $1`, server).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d keys of %s were stored", n, server)
	}
}

func TestStoreNegativeCache(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		c := newClock()
		f := newHTTPFetcher() // knows no server: every fetch fails
		s := newStore(db, Identity{ServerName: "a.test", Key: newKey(t, "ed25519:a1")}, f, c)
		key := newKey(t, "ed25519:x")
		msg := signed(t, "down.test", key, `{}`)
		for i := 0; i < 5; i++ {
			if err := verify(t, s, "down.test", c.Now(), msg); err == nil {
				t.Fatal("verified without a key")
			}
		}
		if n := f.count.Load(); n != 1 {
			t.Fatalf("fetches of a failing server = %d, want 1", n)
		}
		c.Advance(failureTTL + time.Second)
		_ = verify(t, s, "down.test", c.Now(), msg)
		if n := f.count.Load(); n != 2 {
			t.Fatalf("fetches after the failure expired = %d, want 2", n)
		}
	})
}

// Signatures by key IDs the server never published do not make us fetch
// on every request.
func TestStoreUnknownKeyIDs(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		rs := setupRemote(t, db, time.Hour)
		if err := verify(t, rs.store, "b.test", rs.clock.Now(), signed(t, "b.test", rs.bKey.Key, `{}`)); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			other := newKey(t, "ed25519:nope"+itoa(int64(i)))
			if err := verify(t, rs.store, "b.test", rs.clock.Now(), signed(t, "b.test", other, `{}`)); err == nil {
				t.Fatal("an unknown key ID verified")
			}
		}
		if n := rs.fetch.count.Load(); n != 1 {
			t.Fatalf("fetches = %d, want 1", n)
		}
		rs.clock.Advance(refetchEvery + time.Second)
		_ = verify(t, rs.store, "b.test", rs.clock.Now(), signed(t, "b.test", newKey(t, "ed25519:new"), `{}`))
		if n := rs.fetch.count.Load(); n != 2 {
			t.Fatalf("fetches after refetchEvery = %d, want 2", n)
		}
	})
}

func TestStoreSharedFetch(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		rs := setupRemote(t, db, time.Hour)
		gate := make(chan struct{})
		rs.fetch.gate = gate
		msg := signed(t, "b.test", rs.bKey.Key, `{}`)
		const n = 10
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = verify(t, rs.store, "b.test", rs.clock.Now(), msg)
			}()
		}
		// Every lookup is waiting on the one fetch under way.
		eventually(func() bool { return rs.fetch.count.Load() == 1 })
		eventually(func() bool {
			rs.store.mu.Lock()
			defer rs.store.mu.Unlock()
			return rs.store.flights["b.test"] != nil
		})
		close(gate)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("lookup %d: %v", i, err)
			}
		}
		if got := rs.fetch.count.Load(); got != 1 {
			t.Fatalf("fetches = %d, want 1", got)
		}
	})
}

func TestStoreOldKeys(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		c := newClock()
		old := newKey(t, "ed25519:old")
		expired := c.Now().Add(-time.Hour)
		old.ExpiredTS = expired.UnixMilli()
		bIdent := Identity{ServerName: "b.test", Key: newKey(t, "ed25519:new"), OldKeys: []serverkey.Key{old}}
		b := startKeyServer(t, bIdent, ServerConfig{Now: c.Now})
		f := newHTTPFetcher()
		f.add("b.test", b.url)
		s := newStore(db, Identity{ServerName: "a.test", Key: newKey(t, "ed25519:a1")}, f, c)
		msg := signed(t, "b.test", old, `{"old":true}`)
		if err := verify(t, s, "b.test", expired.Add(-time.Minute), msg); err != nil {
			t.Fatalf("old key before its expiry: %v", err)
		}
		if err := verify(t, s, "b.test", expired.Add(time.Minute), msg); err == nil {
			t.Fatal("old key accepted after its expiry")
		}
	})
}

// Our own keys are answered without a fetch.
func TestStoreOwnKeys(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		c := newClock()
		f := newHTTPFetcher()
		old := newKey(t, "ed25519:old")
		old.ExpiredTS = c.Now().Add(-time.Hour).UnixMilli()
		self := Identity{ServerName: "a.test", Key: newKey(t, "ed25519:a1"), OldKeys: []serverkey.Key{old}}
		s := newStore(db, self, f, c)
		if err := verify(t, s, "a.test", c.Now(), signed(t, "a.test", self.Key, `{}`)); err != nil {
			t.Fatal(err)
		}
		if err := verify(t, s, "a.test", c.Now().Add(-2*time.Hour), signed(t, "a.test", old, `{}`)); err != nil {
			t.Fatal(err)
		}
		if err := verify(t, s, "a.test", c.Now(), signed(t, "a.test", old, `{}`)); err == nil {
			t.Fatal("our expired key verified a message of now")
		}
		if n := f.count.Load(); n != 0 {
			t.Fatalf("fetches for our own keys = %d", n)
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
