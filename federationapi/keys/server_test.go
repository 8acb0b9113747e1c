package keys

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func post(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

func topKeys(t *testing.T, body []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Our key server's answer passes gomatrixserverlib's own checks, lists old
// keys after a rotation, and has the spec's shape.
func TestOwnKeys(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		first, err := serverkey.Load(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		active, err := serverkey.Rotate(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		self, err := LoadIdentity(ctx, db, "a.test", active)
		if err != nil {
			t.Fatal(err)
		}
		c := newClock()
		ks := startKeyServer(t, self, ServerConfig{Now: c.Now})
		for _, path := range []string{"/_matrix/key/v2/server", "/_matrix/key/v2/server/" + string(active.ID)} {
			code, body := get(t, ks.url+path)
			if code != http.StatusOK {
				t.Fatalf("%s: %d %s", path, code, body)
			}
			if got, want := strings.Join(topKeys(t, body), ","), "old_verify_keys,server_name,signatures,valid_until_ts,verify_keys"; got != want {
				t.Fatalf("%s: top-level fields %s, want %s", path, got, want)
			}
			var keys gomatrixserverlib.ServerKeys
			if err := keys.UnmarshalJSON(body); err != nil {
				t.Fatal(err)
			}
			checks, ed := gomatrixserverlib.CheckKeys("a.test", c.Now(), keys)
			if !checks.AllChecksOK {
				t.Fatalf("%s: gomatrixserverlib's checks fail: %+v", path, checks)
			}
			if len(ed) != 1 || string(ed[active.ID]) != string(active.PublicKey()) {
				t.Fatalf("verify_keys = %v, want only %s", keys.VerifyKeys, active.ID)
			}
			if want := spec.AsTimestamp(c.Now().Add(OwnKeysValidity)); keys.ValidUntilTS != want {
				t.Fatalf("valid_until_ts = %d, want %d", keys.ValidUntilTS, want)
			}
			old, ok := keys.OldVerifyKeys[first.ID]
			if !ok || len(keys.OldVerifyKeys) != 1 {
				t.Fatalf("old_verify_keys = %v, want %s", keys.OldVerifyKeys, first.ID)
			}
			if string(old.Key) != string(first.PublicKey()) || old.ExpiredTS == 0 || old.ExpiredTS < spec.Timestamp(first.CreatedTS) {
				t.Fatalf("old key %s: %+v", first.ID, old)
			}
		}
		// A quarter of the validity on, the answer is made again with a later validity.
		_, before := get(t, ks.url+"/_matrix/key/v2/server")
		c.Advance(OwnKeysValidity / 2)
		_, after := get(t, ks.url+"/_matrix/key/v2/server")
		var k1, k2 gomatrixserverlib.ServerKeys
		_ = k1.UnmarshalJSON(before)
		_ = k2.UnmarshalJSON(after)
		if k2.ValidUntilTS <= k1.ValidUntilTS {
			t.Fatalf("valid_until_ts did not move on: %d then %d", k1.ValidUntilTS, k2.ValidUntilTS)
		}
	})
}

type notarySetup struct {
	*remoteSetup
	url string
}

func setupNotary(t *testing.T, db *storage.DB, allowed func(string) bool) *notarySetup {
	rs := setupRemote(t, db, time.Hour)
	ks := startKeyServer(t, rs.aIdent, ServerConfig{Store: rs.store, Allowed: allowed, Now: rs.clock.Now})
	return &notarySetup{remoteSetup: rs, url: ks.url}
}

func notaryAnswer(t *testing.T, body []byte) []gomatrixserverlib.ServerKeys {
	t.Helper()
	var resp struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if resp.ServerKeys == nil {
		t.Fatalf("server_keys missing: %s", body)
	}
	out := make([]gomatrixserverlib.ServerKeys, len(resp.ServerKeys))
	for i, raw := range resp.ServerKeys {
		if err := out[i].UnmarshalJSON(raw); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestNotary(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ns := setupNotary(t, db, func(s string) bool { return s != "blocked.test" })
		checkB := func(t *testing.T, keys gomatrixserverlib.ServerKeys) {
			t.Helper()
			if checks, _ := gomatrixserverlib.CheckKeys("b.test", ns.clock.Now(), keys); !checks.AllChecksOK {
				t.Fatalf("b.test's answer fails the checks: %+v", checks)
			}
			if err := gomatrixserverlib.VerifyJSON("a.test", ns.aIdent.Key.ID, ns.aIdent.Key.PublicKey(), keys.Raw); err != nil {
				t.Fatalf("the notary's signature: %v", err)
			}
		}
		t.Run("batch", func(t *testing.T) {
			code, body := post(t, ns.url+"/_matrix/key/v2/query", `{"server_keys":{"b.test":{"ed25519:b1":{"minimum_valid_until_ts":`+itoa(ns.clock.Now().UnixMilli())+`}}}}`)
			if code != http.StatusOK {
				t.Fatalf("%d %s", code, body)
			}
			got := notaryAnswer(t, body)
			if len(got) != 1 || got[0].ServerName != "b.test" {
				t.Fatalf("answer: %s", body)
			}
			checkB(t, got[0])
		})
		t.Run("one server, from the cache", func(t *testing.T) {
			code, body := get(t, ns.url+"/_matrix/key/v2/query/b.test")
			if code != http.StatusOK {
				t.Fatalf("%d %s", code, body)
			}
			got := notaryAnswer(t, body)
			if len(got) != 1 {
				t.Fatalf("answer: %s", body)
			}
			checkB(t, got[0])
			if n := ns.fetch.count.Load(); n != 1 {
				t.Fatalf("fetches = %d, want 1", n)
			}
		})
		t.Run("later validity asked", func(t *testing.T) {
			ns.clock.Advance(refetchEvery + time.Second)
			later := ns.clock.Now().Add(2 * time.Hour).UnixMilli()
			code, body := get(t, ns.url+"/_matrix/key/v2/query/b.test?minimum_valid_until_ts="+itoa(later))
			if code != http.StatusOK || len(notaryAnswer(t, body)) != 1 {
				t.Fatalf("%d %s", code, body)
			}
			if n := ns.fetch.count.Load(); n != 2 {
				t.Fatalf("fetches = %d, want 2 (a fresher answer was asked for)", n)
			}
		})
		t.Run("our own keys", func(t *testing.T) {
			_, body := post(t, ns.url+"/_matrix/key/v2/query", `{"server_keys":{"a.test":{}}}`)
			got := notaryAnswer(t, body)
			if len(got) != 1 || got[0].ServerName != "a.test" {
				t.Fatalf("answer: %s", body)
			}
			if checks, _ := gomatrixserverlib.CheckKeys("a.test", ns.clock.Now(), got[0]); !checks.AllChecksOK {
				t.Fatalf("checks: %+v", checks)
			}
		})
		t.Run("not allowed, unreachable, not a name", func(t *testing.T) {
			before := ns.fetch.count.Load()
			_, body := post(t, ns.url+"/_matrix/key/v2/query", `{"server_keys":{"blocked.test":{},"down.test":{},"bad name":{}}}`)
			if got := notaryAnswer(t, body); len(got) != 0 {
				t.Fatalf("answer: %s", body)
			}
			if n := ns.fetch.count.Load() - before; n != 1 {
				t.Fatalf("fetches = %d, want 1 (down.test only)", n)
			}
		})
		t.Run("bad requests", func(t *testing.T) {
			for _, tc := range []struct{ body, code string }{
				{`{}`, "M_BAD_JSON"},
				{`not json`, "M_NOT_JSON"},
				{`{"server_keys":[]}`, "M_BAD_JSON"},
			} {
				code, body := post(t, ns.url+"/_matrix/key/v2/query", tc.body)
				if code != http.StatusBadRequest || !strings.Contains(string(body), tc.code) {
					t.Fatalf("%s: %d %s, want 400 %s", tc.body, code, body, tc.code)
				}
			}
			code, body := get(t, ns.url+"/_matrix/key/v2/query/b.test?minimum_valid_until_ts=soon")
			if code != http.StatusBadRequest || !strings.Contains(string(body), "M_INVALID_PARAM") {
				t.Fatalf("%d %s", code, body)
			}
		})
	})
}
