package roomkeys

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestMain(m *testing.M) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	logging.SetFallback(l)
	os.Exit(m.Run())
}

func TestBetter(t *testing.T) {
	k := func(verified bool, first, fwd int64) KeyData {
		return KeyData{IsVerified: verified, FirstMessageIndex: first, ForwardedCount: fwd, SessionData: json.RawMessage(`{}`)}
	}
	for _, tc := range []struct {
		name     string
		new, old KeyData
		want     bool
	}{
		{"verified beats unverified", k(true, 9, 9), k(false, 0, 0), true},
		{"unverified never beats verified", k(false, 0, 0), k(true, 9, 9), false},
		{"lower first index wins", k(false, 1, 5), k(false, 2, 0), true},
		{"higher first index loses", k(true, 3, 0), k(true, 2, 9), false},
		{"fewer forwards win at equal index", k(false, 2, 0), k(false, 2, 1), true},
		{"more forwards lose", k(false, 2, 2), k(false, 2, 1), false},
		{"equal keeps the stored key", k(true, 2, 1), k(true, 2, 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Better(tc.new, tc.old); got != tc.want {
				t.Fatalf("Better = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "42": 42, "": 0, "0": 0, "01": 0, "-1": 0, "+1": 0, "1.0": 0, "x": 0,
		"9999999999999999999": 0, " 1": 0} {
		got, ok := parseVersion(in)
		if ok != (want > 0) || got != want && ok {
			t.Errorf("parseVersion(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
}

func TestKeyDataDecoding(t *testing.T) {
	for _, tc := range []struct {
		body string
		code string // "" when valid
	}{
		{`{"first_message_index":1,"forwarded_count":0,"is_verified":true,"session_data":{"ciphertext":"x"}}`, ""},
		{`{"forwarded_count":0,"is_verified":true,"session_data":{}}`, "M_BAD_JSON"},
		{`{"first_message_index":1,"is_verified":true,"session_data":{}}`, "M_BAD_JSON"},
		{`{"first_message_index":1,"forwarded_count":0,"session_data":{}}`, "M_BAD_JSON"},
		{`{"first_message_index":1,"forwarded_count":0,"is_verified":true}`, "M_BAD_JSON"},
		{`{"first_message_index":1,"forwarded_count":0,"is_verified":true,"session_data":"str"}`, "M_BAD_JSON"},
		{`{"first_message_index":-1,"forwarded_count":0,"is_verified":true,"session_data":{}}`, "M_BAD_JSON"},
		{`{"first_message_index":1.5,"forwarded_count":0,"is_verified":true,"session_data":{}}`, "M_BAD_JSON"},
		{`{"first_message_index":"1","forwarded_count":0,"is_verified":true,"session_data":{}}`, "M_BAD_JSON"},
		{`{"first_message_index":1,"forwarded_count":0,"is_verified":"yes","session_data":{}}`, "M_BAD_JSON"},
	} {
		var k KeyData
		err := httpx.Unmarshal([]byte(tc.body), &k)
		if tc.code == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.body, err)
			}
			continue
		}
		if !merr.Is(err, tc.code) {
			t.Errorf("%s: got %v, want %s", tc.body, err, tc.code)
		}
	}
	// Inside an upload the same checks apply.
	var up struct {
		Rooms map[string]struct {
			Sessions RoomKeys `json:"sessions"`
		} `json:"rooms"`
	}
	if err := httpx.Unmarshal([]byte(`{"rooms":{"!r:x":{"sessions":{"s":{"first_message_index":1}}}}}`), &up); !merr.Is(err, "M_BAD_JSON") {
		t.Fatalf("nested: %v", err)
	}
}

func key(verified bool, first, fwd int64, data string) KeyData {
	return KeyData{IsVerified: verified, FirstMessageIndex: first, ForwardedCount: fwd, SessionData: json.RawMessage(`{"d":"` + data + `"}`)}
}

func wantCode(t *testing.T, err error, code string) *merr.Error {
	t.Helper()
	me, ok := merr.As(err)
	if !ok || me.Code != code {
		t.Fatalf("want %s, got %v", code, err)
	}
	return me
}

func TestBackupLifecycle(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db)
		const alice, bob = "@alice:test", "@bob:test"
		auth := json.RawMessage(`{"public_key":"abc","signatures":{}}`)

		_, err := s.Version(ctx, alice, "")
		wantCode(t, err, "M_NOT_FOUND")
		_, err = s.PutKeys(ctx, alice, "1", Keys{"!r:test": {"s1": key(false, 0, 0, "a")}})
		wantCode(t, err, "M_NOT_FOUND")

		v1, err := s.CreateVersion(ctx, alice, "m.megolm_backup.v1.curve25519-aes-sha2", auth)
		if err != nil || v1 != "1" {
			t.Fatalf("create: %q %v", v1, err)
		}
		info, err := s.Version(ctx, alice, "")
		if err != nil || info.Version != "1" || info.Count != 0 || info.Algorithm != "m.megolm_backup.v1.curve25519-aes-sha2" || string(info.AuthData) != string(auth) {
			t.Fatalf("current: %+v %v", info, err)
		}
		// Other users see nothing of it.
		_, err = s.Version(ctx, bob, "1")
		wantCode(t, err, "M_NOT_FOUND")

		c, err := s.PutKeys(ctx, alice, "1", Keys{
			"!r:test": {"s1": key(false, 5, 1, "first"), "s2": key(false, 0, 0, "two")},
			"!q:test": {"s3": key(true, 0, 0, "three")},
		})
		if err != nil || c.Count != 3 {
			t.Fatalf("put: %+v %v", c, err)
		}
		etag1 := c.ETag

		// A worse key changes nothing, the etag stays.
		c, err = s.PutKeys(ctx, alice, "1", Keys{"!r:test": {"s1": key(false, 6, 0, "worse")}})
		if err != nil || c.Count != 3 || c.ETag != etag1 {
			t.Fatalf("worse put: %+v %v (etag before %s)", c, err, etag1)
		}
		got, err := s.Keys(ctx, alice, "1", "!r:test", "s1")
		if err != nil || string(got["!r:test"]["s1"].SessionData) != `{"d":"first"}` {
			t.Fatalf("after worse: %+v %v", got, err)
		}
		// A better one replaces it and moves the etag.
		c, err = s.PutKeys(ctx, alice, "1", Keys{"!r:test": {"s1": key(true, 7, 3, "verified")}})
		if err != nil || c.Count != 3 || c.ETag == etag1 {
			t.Fatalf("better put: %+v %v", c, err)
		}
		got, err = s.Keys(ctx, alice, "1", "!r:test", "s1")
		if err != nil || string(got["!r:test"]["s1"].SessionData) != `{"d":"verified"}` || !got["!r:test"]["s1"].IsVerified {
			t.Fatalf("after better: %+v %v", got, err)
		}

		all, err := s.Keys(ctx, alice, "1", "", "")
		if err != nil || len(all) != 2 || len(all["!r:test"]) != 2 || len(all["!q:test"]) != 1 {
			t.Fatalf("all keys: %+v %v", all, err)
		}
		room, err := s.Keys(ctx, alice, "1", "!none:test", "")
		if err != nil || len(room) != 0 {
			t.Fatalf("empty room: %+v %v", room, err)
		}

		// A new version becomes current; writes to the old one are refused.
		v2, err := s.CreateVersion(ctx, alice, "m.megolm_backup.v1.curve25519-aes-sha2", auth)
		if err != nil || v2 != "2" {
			t.Fatalf("second version: %q %v", v2, err)
		}
		_, err = s.PutKeys(ctx, alice, "1", Keys{"!r:test": {"s9": key(true, 0, 0, "x")}})
		me := wantCode(t, err, "M_WRONG_ROOM_KEYS_VERSION")
		if me.Status != 403 || me.Extra["current_version"] != "2" {
			t.Fatalf("wrong version error: %+v", me)
		}
		_, err = s.PutKeys(ctx, alice, "junk", Keys{})
		wantCode(t, err, "M_WRONG_ROOM_KEYS_VERSION")
		// Old versions can still be read.
		if all, err := s.Keys(ctx, alice, "1", "", ""); err != nil || len(all) != 2 {
			t.Fatalf("old version read: %v %v", all, err)
		}

		// Updating: algorithm must stay, versions must match.
		newAuth := json.RawMessage(`{"public_key":"def"}`)
		wantCode(t, s.UpdateVersion(ctx, alice, "2", VersionUpdate{Algorithm: "other", AuthData: newAuth}), "M_INVALID_PARAM")
		wantCode(t, s.UpdateVersion(ctx, alice, "2", VersionUpdate{Algorithm: "m.megolm_backup.v1.curve25519-aes-sha2", AuthData: newAuth, Version: "1"}), "M_INVALID_PARAM")
		wantCode(t, s.UpdateVersion(ctx, alice, "7", VersionUpdate{Algorithm: "m.megolm_backup.v1.curve25519-aes-sha2", AuthData: newAuth}), "M_NOT_FOUND")
		if err := s.UpdateVersion(ctx, alice, "2", VersionUpdate{Algorithm: "m.megolm_backup.v1.curve25519-aes-sha2", AuthData: newAuth, Version: "2"}); err != nil {
			t.Fatal(err)
		}
		if info, err := s.Version(ctx, alice, "2"); err != nil || string(info.AuthData) != string(newAuth) {
			t.Fatalf("after update: %+v %v", info, err)
		}

		// Deleting keys: a session, a room, everything.
		c, err = s.DeleteKeys(ctx, alice, "1", "!r:test", "s2")
		if err != nil || c.Count != 2 {
			t.Fatalf("delete session: %+v %v", c, err)
		}
		c, err = s.DeleteKeys(ctx, alice, "1", "!q:test", "")
		if err != nil || c.Count != 1 {
			t.Fatalf("delete room: %+v %v", c, err)
		}
		c, err = s.DeleteKeys(ctx, alice, "1", "", "")
		if err != nil || c.Count != 0 {
			t.Fatalf("delete all: %+v %v", c, err)
		}

		// Deleting the current version makes the previous one current; numbers are not reused.
		if err := s.DeleteVersion(ctx, alice, "2"); err != nil {
			t.Fatal(err)
		}
		wantCode(t, s.DeleteVersion(ctx, alice, "2"), "M_NOT_FOUND")
		if info, err := s.Version(ctx, alice, ""); err != nil || info.Version != "1" {
			t.Fatalf("after delete: %+v %v", info, err)
		}
		if v3, err := s.CreateVersion(ctx, alice, "a", auth); err != nil || v3 != "3" {
			t.Fatalf("third version: %q %v", v3, err)
		}
		_, err = s.Keys(ctx, alice, "2", "", "")
		wantCode(t, err, "M_NOT_FOUND")
		_, err = s.Keys(ctx, alice, "", "", "")
		wantCode(t, err, "M_MISSING_PARAM")
	})
}

func TestBadRequests(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db)
		_, err := s.CreateVersion(ctx, "@a:test", "", json.RawMessage(`{}`))
		wantCode(t, err, "M_BAD_JSON")
		_, err = s.CreateVersion(ctx, "@a:test", "alg", json.RawMessage(`[]`))
		wantCode(t, err, "M_BAD_JSON")
		_, err = s.CreateVersion(ctx, "@a:test", "alg", nil)
		wantCode(t, err, "M_BAD_JSON")
		if _, err := s.CreateVersion(ctx, "@a:test", "alg", json.RawMessage(`{}`)); err != nil {
			t.Fatal(err)
		}
		_, err = s.PutKeys(ctx, "@a:test", "1", Keys{"not-a-room": {"s": key(false, 0, 0, "x")}})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = s.PutKeys(ctx, "@a:test", "1", Keys{"!r:test": {"": key(false, 0, 0, "x")}})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = s.PutKeys(ctx, "@a:test", "", Keys{})
		wantCode(t, err, "M_MISSING_PARAM")
		// NUL characters cannot be stored by PostgreSQL: refused up front.
		_, err = s.PutKeys(ctx, "@a:test", "1", Keys{"!r\x00:test": {"s": key(false, 0, 0, "x")}})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = s.PutKeys(ctx, "@a:test", "1", Keys{"!r:test": {"s\x00": key(false, 0, 0, "x")}})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = s.CreateVersion(ctx, "@a:test", "alg\x00", json.RawMessage(`{}`))
		wantCode(t, err, "M_BAD_JSON")
		_, err = s.DeleteKeys(ctx, "@a:test", "1", "!r\x00:test", "")
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = s.Keys(ctx, "@a:test", "1", "bad", "")
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = s.Version(ctx, "@a:test", "abc")
		wantCode(t, err, "M_NOT_FOUND")
		// Nothing of the refused uploads was stored.
		if info, err := s.Version(ctx, "@a:test", "1"); err != nil || info.Count != 0 || info.ETag != "0" {
			t.Fatalf("%+v %v", info, err)
		}
	})
}

// Concurrent uploads of the same session keep the best key whatever the order.
func TestConcurrentUploadsKeepTheBest(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db)
		if _, err := s.CreateVersion(ctx, "@a:test", "alg", json.RawMessage(`{}`)); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if _, err := s.PutKeys(ctx, "@a:test", "1", Keys{"!r:test": {"s": key(false, int64(10-i), 0, string(rune('a'+i)))}}); err != nil {
					t.Error(err)
				}
			}(i)
		}
		wg.Wait()
		got, err := s.Keys(ctx, "@a:test", "1", "!r:test", "s")
		if err != nil || got["!r:test"]["s"].FirstMessageIndex != 3 {
			t.Fatalf("%+v %v", got, err)
		}
	})
}
