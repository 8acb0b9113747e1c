package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/userapi/keys"
)

// withKeys gives the env a real key service on its database, with
// devices for bob (B1, B2) and alice (A1).
func (e *env) withKeys() *keys.Service {
	e.t.Helper()
	ks, err := keys.New(e.ctx, e.db, nil, keys.Options{ServerName: localName})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(ks.Close)
	for _, d := range [][2]string{{bob, "B1"}, {bob, "B2"}, {alice, "A1"}} {
		err := e.db.Write(e.ctx, func(tx *storage.Tx) error {
			_, err := tx.Exec(e.ctx, `INSERT INTO devices (user_id, device_id, token_hash, created_ts, last_seen_ts) VALUES ($1, $2, $3, 0, 0)`,
				d[0], d[1], d[0]+"/"+d[1])
			return err
		})
		if err != nil {
			e.t.Fatal(err)
		}
	}
	e.api.ToDevice, e.api.KeyClaims = ks, ks
	return ks
}

// toDeviceOf reads the to-device messages queued for a device, as their
// contents.
func toDeviceOf(t testing.TB, ks *keys.Service, user, device string) []string {
	t.Helper()
	evs, _, err := ks.ToDeviceMessages(context.Background(), user, device, 0, ks.ToDevicePosition(), 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, raw := range evs {
		var ev struct {
			Sender  string          `json:"sender"`
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev.Sender+" "+string(ev.Content))
	}
	return out
}

func toDeviceEDU(sender, messageID string, messages any) map[string]any {
	return map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{
		"sender": sender, "type": "m.room_key", "message_id": messageID, "messages": messages}}
}

// TestToDeviceEDUs: m.direct_to_device EDUs reach our users' devices once
// per message ID, even in another transaction; EDUs of users of another
// server than the origin, and unusable ones, are dropped without failing
// the transaction.
func TestToDeviceEDUs(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		ks := e.withKeys()
		edu := toDeviceEDU(rita, "m1", map[string]any{
			bob:   map[string]any{"*": map[string]any{"n": 1}, "B2": map[string]any{"n": 2}},
			alice: map[string]any{"A1": map[string]any{"n": 3}},
		})
		pduResults(t, e.do("PUT", sendPath("d1"), remoteName, txn(nil, edu)))
		if got := toDeviceOf(t, ks, bob, "B1"); len(got) != 1 || got[0] != rita+` {"n":1}` {
			t.Fatalf("B1 has %v", got)
		}
		if got := toDeviceOf(t, ks, bob, "B2"); len(got) != 1 || got[0] != rita+` {"n":2}` {
			t.Fatalf("B2 has %v", got)
		}
		if got := toDeviceOf(t, ks, alice, "A1"); len(got) != 1 {
			t.Fatalf("A1 has %v", got)
		}
		// The same EDU in another transaction (its origin restarted and
		// sends it again): delivered once.
		pduResults(t, e.do("PUT", sendPath("d2"), remoteName, txn(nil, edu)))
		if got := toDeviceOf(t, ks, bob, "B1"); len(got) != 1 {
			t.Fatalf("B1 has %v after the repeat", got)
		}

		// Dropped, the transaction answered 200 all the same.
		for _, bad := range []map[string]any{
			toDeviceEDU("@mallory:"+otherName, "m2", map[string]any{bob: map[string]any{"B1": map[string]any{}}}),
			toDeviceEDU("not a user", "m3", map[string]any{bob: map[string]any{"B1": map[string]any{}}}),
			toDeviceEDU(rita, "", map[string]any{bob: map[string]any{"B1": map[string]any{}}}),
			toDeviceEDU(rita, "m4", "not a map"),
			toDeviceEDU(rita, "m5", map[string]any{bob: map[string]any{"B1": "not an object"}}),
			toDeviceEDU(rita, "m6", map[string]any{bob: []int{1}}),
			toDeviceEDU(rita, "m7", map[string]any{"@x:" + remoteName: map[string]any{"*": map[string]any{}}}),
			{"edu_type": "m.direct_to_device", "content": "text"},
			{"edu_type": "m.direct_to_device", "content": map[string]any{"sender": rita, "type": 5, "message_id": "m8",
				"messages": map[string]any{bob: map[string]any{"B1": map[string]any{}}}}},
		} {
			r := e.do("PUT", sendPath(fmt.Sprintf("bad%p", bad)), remoteName, txn(nil, bad))
			if r.status != http.StatusOK {
				t.Fatalf("EDU %v: %d %s", bad, r.status, r.body)
			}
		}
		if got := toDeviceOf(t, ks, bob, "B1"); len(got) != 1 {
			t.Fatalf("B1 has %v after the unusable EDUs", got)
		}
	})
}

// failingInbox fails its first delivery as a database would.
type failingInbox struct {
	ToDeviceInbox
	failed atomic.Bool
}

func (f *failingInbox) ReceiveToDevice(ctx context.Context, origin, sender, evType, messageID string, messages map[string]map[string]json.RawMessage) error {
	if f.failed.CompareAndSwap(false, true) {
		return errors.New("database is locked")
	}
	return f.ToDeviceInbox.ReceiveToDevice(ctx, origin, sender, evType, messageID, messages)
}

// TestToDeviceEDUNotStored: an EDU that could not be stored fails the
// transaction (503), which is not remembered as answered: the origin's
// retry under the same transaction ID delivers it.
func TestToDeviceEDUNotStored(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		ks := e.withKeys()
		e.api.ToDevice = &failingInbox{ToDeviceInbox: ks}
		body := txn(nil, toDeviceEDU(rita, "m1", map[string]any{bob: map[string]any{"B1": map[string]any{"n": 1}}}))
		wantErr(t, e.do("PUT", sendPath("f1"), remoteName, body), http.StatusServiceUnavailable, "M_UNKNOWN")
		if got := toDeviceOf(t, ks, bob, "B1"); len(got) != 0 {
			t.Fatalf("B1 has %v", got)
		}
		pduResults(t, e.do("PUT", sendPath("f1"), remoteName, body))
		pduResults(t, e.do("PUT", sendPath("f1"), remoteName, body))
		if got := toDeviceOf(t, ks, bob, "B1"); len(got) != 1 {
			t.Fatalf("B1 has %v after the retries", got)
		}
	})
}

// TestUserKeysClaim: another server claims our users' one-time keys, then
// their fallback key, through signed requests; bad requests get Matrix
// errors.
func TestUserKeysClaim(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		ks := e.withKeys()
		_, err := ks.Upload(e.ctx, bob, "B1", keys.UploadRequest{
			OneTimeKeys: map[string]json.RawMessage{
				"signed_curve25519:AAAA": json.RawMessage(`{"key":"one"}`),
				"signed_curve25519:AAAB": json.RawMessage(`{"key":"two"}`),
			},
			FallbackKeys: map[string]json.RawMessage{"signed_curve25519:FFFF": json.RawMessage(`{"key":"fallback","fallback":true}`)},
		})
		if err != nil {
			t.Fatal(err)
		}
		const path = "/_matrix/federation/v1/user/keys/claim"
		want := map[string]any{"one_time_keys": map[string]any{
			bob: map[string]any{"B1": "signed_curve25519", "NOPE": "signed_curve25519"},
			// Not ours: left out.
			rita: map[string]any{"R1": "signed_curve25519"},
		}}
		var got []string
		for i := 0; i < 4; i++ {
			r := e.doSigned("POST", path, remoteName, e.remote, want)
			wantOK(t, r)
			var ans struct {
				OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
			}
			r.decode(t, &ans)
			if len(ans.OneTimeKeys) != 1 || len(ans.OneTimeKeys[bob]) != 1 || len(ans.OneTimeKeys[bob]["B1"]) != 1 {
				t.Fatalf("claim %d: %s", i, r.body)
			}
			for id := range ans.OneTimeKeys[bob]["B1"] {
				got = append(got, id)
			}
		}
		if strings.Join(got, ",") != "signed_curve25519:AAAA,signed_curve25519:AAAB,signed_curve25519:FFFF,signed_curve25519:FFFF" {
			t.Fatalf("claimed %v", got)
		}

		for _, tc := range []struct {
			name, body string
			status     int
			errcode    string
		}{
			{"not JSON", `{"one_time_keys":`, 400, "M_NOT_JSON"},
			{"not an object", `[]`, 400, "M_BAD_JSON"},
			{"missing", `{}`, 400, "M_MISSING_PARAM"},
			{"wrong type", `{"one_time_keys":{"` + bob + `":{"B1":5}}}`, 400, "M_BAD_JSON"},
			{"bad user", `{"one_time_keys":{"bob":{"B1":"signed_curve25519"}}}`, 400, "M_INVALID_PARAM"},
			{"bad algorithm", `{"one_time_keys":{"` + bob + `":{"B1":"a:b"}}}`, 400, "M_INVALID_PARAM"},
			{"NUL in device", `{"one_time_keys":{"` + bob + `":{"B\u0000":"signed_curve25519"}}}`, 400, "M_INVALID_PARAM"},
			{"too large", `{"one_time_keys":{"` + bob + `":{"` + strings.Repeat("D", keyClaimBody) + `":"x"}}}`, 413, "M_TOO_LARGE"},
		} {
			wantErr(t, e.do("POST", path, remoteName, tc.body), tc.status, tc.errcode)
		}
		// Requests must be signed.
		req, err := http.NewRequestWithContext(e.ctx, "POST", e.authURL+path, strings.NewReader(`{"one_time_keys":{}}`))
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, e.roundTrip(req), http.StatusUnauthorized, "M_UNAUTHORIZED")
	})
}

// FuzzToDeviceEDU feeds m.direct_to_device EDU contents to /send with a
// real key service behind it: never a 5xx, never a panic.
func FuzzToDeviceEDU(f *testing.F) {
	e := newEnv(f, storagetest.Open(f, storage.SQLite))
	e.withKeys()
	for _, s := range []string{
		`{"sender":"@rita:remote.test","type":"m.x","message_id":"a","messages":{"@bob:local.test":{"*":{}}}}`,
		`{"sender":"@rita:remote.test","type":"m.x","message_id":"\u0000","messages":{"@bob:local.test":{"B\u0000":{"\u0000":"\ud800"}}}}`,
		`{"sender":"@rita:remote.test","type":"\u0000","message_id":"b","messages":{"@bob:local.test\u0000":{"*":{}}}}`,
		`{"sender":"@rita:remote.test","type":"m.x","message_id":"c","messages":{"@bob:local.test":{"*":[],"B1":null,"B2":1e999}}}`,
		`{"sender":"@rita:remote.test","type":"m.x","message_id":"d","messages":null}`,
		`{"sender":5}`,
		`null`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	var n atomic.Int64
	var mu sync.Mutex
	f.Fuzz(func(t *testing.T, content []byte) {
		if !json.Valid(content) {
			return
		}
		body, _ := json.Marshal(map[string]any{"origin": remoteName, "pdus": []any{},
			"edus": []any{map[string]any{"edu_type": "m.direct_to_device", "content": json.RawMessage(content)}}})
		req := httptest.NewRequestWithContext(e.ctx, http.MethodPut, sendPath(fmt.Sprintf("tdfuzz%d", n.Add(1))), strings.NewReader(string(body)))
		req.Header.Set(originHeader, remoteName)
		w := httptest.NewRecorder()
		mu.Lock()
		e.plain.ServeHTTP(w, req)
		mu.Unlock()
		if w.Code >= 500 {
			t.Fatalf("status %d %s for %s", w.Code, w.Body.Bytes(), content)
		}
	})
}
