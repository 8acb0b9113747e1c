package keys

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

type fakeBus struct {
	mu   sync.Mutex
	msgs map[string][][]byte
}

func (b *fakeBus) Publish(topic string, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.msgs == nil {
		b.msgs = map[string][][]byte{}
	}
	b.msgs[topic] = append(b.msgs[topic], data)
	return nil
}

func (b *fakeBus) Subscribe(string, func([]byte)) (func(), error) { return func() {}, nil }

func (b *fakeBus) count(topic string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs[topic])
}

func newTestService(t *testing.T, db *storage.DB) (*Service, *fakeBus) {
	t.Helper()
	bus := &fakeBus{}
	s, err := New(context.Background(), db, bus, Options{ServerName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, bus
}

func addDevice(t *testing.T, db *storage.DB, user, device, name string) {
	t.Helper()
	err := db.Write(context.Background(), func(tx *storage.Tx) error {
		_, err := tx.Exec(context.Background(), `INSERT INTO devices (user_id, device_id, display_name, token_hash, created_ts, last_seen_ts)
VALUES ($1, $2, $3, $4, 0, 0)`, user, device, name, user+"/"+device)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func deviceKeysJSON(user, device, ed, curve string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"user_id": user, "device_id": device,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + device: ed, "curve25519:" + device: curve},
		"signatures": map[string]any{user: map[string]string{"ed25519:" + device: "sig"}},
		"unsigned":   map[string]any{"client": "dropped"},
	})
	return b
}

func otks(prefix string, n int) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for i := 0; i < n; i++ {
		out[fmt.Sprintf("signed_curve25519:%s%03d", prefix, i)] = json.RawMessage(fmt.Sprintf(`{"key":"%s%03d","signatures":{}}`, prefix, i))
	}
	return out
}

func errcode(err error) string {
	if me, ok := merr.As(err); ok {
		return me.Code
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

func TestUploadQueryClaim(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, bus := newTestService(t, db)
		addDevice(t, db, "@a:x", "DEV1", "laptop")
		addDevice(t, db, "@b:x", "BDEV", "")
		counts, err := s.Upload(ctx, "@a:x", "DEV1", UploadRequest{
			DeviceKeys:   deviceKeysJSON("@a:x", "DEV1", "edA", "cuA"),
			OneTimeKeys:  otks("k", 2),
			FallbackKeys: map[string]json.RawMessage{"signed_curve25519:fb1": json.RawMessage(`{"key":"fb1","fallback":true}`)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if counts["signed_curve25519"] != 2 {
			t.Fatalf("counts %v", counts)
		}
		if s.DeviceListPosition() != 1 || bus.count(TopicDeviceLists) != 1 {
			t.Fatalf("device list position %d, notices %d", s.DeviceListPosition(), bus.count(TopicDeviceLists))
		}
		// The same device keys again: no change of the device list.
		if _, err := s.Upload(ctx, "@a:x", "DEV1", UploadRequest{DeviceKeys: deviceKeysJSON("@a:x", "DEV1", "edA", "cuA")}); err != nil {
			t.Fatal(err)
		}
		if n := bus.count(TopicDeviceLists); n != 1 {
			t.Fatalf("an unchanged upload published a device list change (%d notices)", n)
		}
		c, fb, err := s.KeyCounts(ctx, "@a:x", "DEV1")
		if err != nil || c["signed_curve25519"] != 2 || len(fb) != 1 || fb[0] != "signed_curve25519" {
			t.Fatalf("key counts %v %v %v", c, fb, err)
		}

		q, err := s.Query(ctx, "@b:x", map[string][]string{"@a:x": nil, "@nobody:x": nil, "@c:remote": nil})
		if err != nil {
			t.Fatal(err)
		}
		var dk struct {
			UserID   string         `json:"user_id"`
			Unsigned map[string]any `json:"unsigned"`
		}
		if err := json.Unmarshal(q.DeviceKeys["@a:x"]["DEV1"], &dk); err != nil || dk.UserID != "@a:x" || dk.Unsigned["device_display_name"] != "laptop" || dk.Unsigned["client"] != nil {
			t.Fatalf("query %s", q.DeviceKeys["@a:x"]["DEV1"])
		}
		if devs, ok := q.DeviceKeys["@nobody:x"]; !ok || len(devs) != 0 {
			t.Fatalf("unknown user: %v %v", devs, ok)
		}
		if _, ok := q.Failures["remote"]; !ok {
			t.Fatalf("failures %v", q.Failures)
		}

		// Two one-time keys, then the fallback key, twice.
		want := map[string]map[string]string{"@a:x": {"DEV1": "signed_curve25519"}}
		seen := map[string]bool{}
		for i := 0; i < 4; i++ {
			r, err := s.Claim(ctx, want)
			if err != nil {
				t.Fatal(err)
			}
			got := r.OneTimeKeys["@a:x"]["DEV1"]
			if len(got) != 1 {
				t.Fatalf("claim %d: %v", i, r.OneTimeKeys)
			}
			for id := range got {
				if i < 2 && (id == "signed_curve25519:fb1" || seen[id]) {
					t.Fatalf("claim %d got %s", i, id)
				}
				if i >= 2 && id != "signed_curve25519:fb1" {
					t.Fatalf("claim %d got %s, want the fallback key", i, id)
				}
				seen[id] = true
			}
		}
		c, fb, err = s.KeyCounts(ctx, "@a:x", "DEV1")
		if err != nil || c["signed_curve25519"] != 0 || len(fb) != 0 {
			t.Fatalf("after claims: %v %v %v", c, fb, err)
		}
		// A new fallback key is unused again.
		if _, err := s.Upload(ctx, "@a:x", "DEV1", UploadRequest{FallbackKeys: map[string]json.RawMessage{"signed_curve25519:fb2": json.RawMessage(`{"key":"fb2"}`)}}); err != nil {
			t.Fatal(err)
		}
		if _, fb, _ = s.KeyCounts(ctx, "@a:x", "DEV1"); len(fb) != 1 {
			t.Fatalf("fallback types %v", fb)
		}
		// Claims for unknown devices and users give nothing; remote ones a failure.
		r, err := s.Claim(ctx, map[string]map[string]string{"@b:x": {"BDEV": "signed_curve25519"}, "@a:x": {"NOPE": "signed_curve25519"}, "@c:remote": {"D": "signed_curve25519"}})
		if err != nil || len(r.OneTimeKeys) != 0 || r.Failures["remote"] == nil {
			t.Fatalf("claim %v %v", r, err)
		}

		// A rename changes the device list (the name is in /keys/query).
		s.DevicesChanged(ctx, "@a:x", nil, nil)
		if n := bus.count(TopicDeviceLists); n != 2 {
			t.Fatalf("%d device list notices after a rename", n)
		}
		// Deleting the device drops its keys and changes the device list.
		s.DevicesChanged(ctx, "@a:x", nil, []string{"DEV1"})
		if n := bus.count(TopicDeviceLists); n != 3 {
			t.Fatalf("%d device list notices", n)
		}
		dlPos := s.DeviceListPosition()
		var n int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM device_keys WHERE user_id = '@a:x'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("device keys left: %d %v", n, err)
		}
		var changes []string
		if err := s.AllDeviceListChanges(ctx, func(u string, p int64) { changes = append(changes, fmt.Sprint(u, p)) }); err != nil || len(changes) != 1 || changes[0] != fmt.Sprint("@a:x", dlPos) {
			t.Fatalf("changes %v %v", changes, err)
		}
	})
}

func TestUploadRefusals(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		addDevice(t, db, "@a:x", "DEV1", "")
		if _, err := s.Upload(ctx, "@a:x", "DEV1", UploadRequest{DeviceKeys: deviceKeysJSON("@a:x", "DEV1", "edA", "cuA"), OneTimeKeys: otks("k", 1)}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			req  UploadRequest
			code string
		}{
			{"other user", UploadRequest{DeviceKeys: deviceKeysJSON("@b:x", "DEV1", "edA", "cuA")}, "M_INVALID_PARAM"},
			{"other device", UploadRequest{DeviceKeys: deviceKeysJSON("@a:x", "DEV2", "edA", "cuA")}, "M_INVALID_PARAM"},
			{"not an object", UploadRequest{DeviceKeys: json.RawMessage(`[1]`)}, "M_BAD_JSON"},
			{"no keys", UploadRequest{DeviceKeys: json.RawMessage(`{"user_id":"@a:x","device_id":"DEV1","algorithms":["a"],"signatures":{}}`)}, "M_BAD_JSON"},
			{"only IDs", UploadRequest{DeviceKeys: json.RawMessage(`{"user_id":"@a:x","device_id":"DEV1"}`)}, "M_BAD_JSON"},
			{"wrong field type", UploadRequest{DeviceKeys: json.RawMessage(`{"user_id":5}`)}, "M_BAD_JSON"},
			{"reused one-time key ID", UploadRequest{OneTimeKeys: map[string]json.RawMessage{"signed_curve25519:k000": json.RawMessage(`{"key":"other"}`)}}, "M_INVALID_PARAM"},
			{"bad key ID", UploadRequest{OneTimeKeys: map[string]json.RawMessage{"nocolon": json.RawMessage(`"k"`)}}, "M_INVALID_PARAM"},
			{"bad key value", UploadRequest{OneTimeKeys: map[string]json.RawMessage{"curve25519:a": json.RawMessage(`5`)}}, "M_BAD_JSON"},
			{"two fallback keys", UploadRequest{FallbackKeys: map[string]json.RawMessage{"a:1": json.RawMessage(`"k"`), "a:2": json.RawMessage(`"l"`)}}, "M_INVALID_PARAM"},
		} {
			_, err := s.Upload(ctx, "@a:x", "DEV1", tc.req)
			if errcode(err) != tc.code {
				t.Errorf("%s: got %v, want %s", tc.name, err, tc.code)
			}
		}
		// A retried upload of the same one-time key is fine and adds nothing.
		c, err := s.Upload(ctx, "@a:x", "DEV1", UploadRequest{OneTimeKeys: otks("k", 1)})
		if err != nil || c["signed_curve25519"] != 1 {
			t.Fatalf("retry: %v %v", c, err)
		}
	})
}

func TestConcurrentClaimsNeverShareAKey(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		addDevice(t, db, "@a:x", "DEV1", "")
		const keys, claims = 40, 60
		if _, err := s.Upload(ctx, "@a:x", "DEV1", UploadRequest{OneTimeKeys: otks("c", keys),
			FallbackKeys: map[string]json.RawMessage{"signed_curve25519:fb": json.RawMessage(`{"key":"fb"}`)}}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		got := map[string]int{}
		errs := make(chan error, claims)
		for i := 0; i < claims; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := s.Claim(ctx, map[string]map[string]string{"@a:x": {"DEV1": "signed_curve25519"}})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for id := range r.OneTimeKeys["@a:x"]["DEV1"] {
					got[id]++
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		otk := 0
		for id, n := range got {
			if id == "signed_curve25519:fb" {
				continue
			}
			otk++
			if n != 1 {
				t.Fatalf("key %s handed out %d times", id, n)
			}
		}
		if otk != keys || got["signed_curve25519:fb"] != claims-keys {
			t.Fatalf("%d one-time keys and %d fallback claims", otk, got["signed_curve25519:fb"])
		}
	})
}

func TestToDevice(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, bus := newTestService(t, db)
		addDevice(t, db, "@a:x", "A1", "")
		addDevice(t, db, "@b:x", "B1", "")
		addDevice(t, db, "@b:x", "B2", "")
		msgs := map[string]map[string]json.RawMessage{
			"@b:x":      {"*": json.RawMessage(`{"n": 1}`), "B2": json.RawMessage(`{"n":2}`)},
			"@a:x":      {"GONE": json.RawMessage(`{}`)},
			"@c:remote": {"D": json.RawMessage(`{}`)},
		}
		if err := s.SendToDevice(ctx, "@a:x", "A1", "m.test", "t1", msgs); err != nil {
			t.Fatal(err)
		}
		// The same transaction again queues nothing.
		if err := s.SendToDevice(ctx, "@a:x", "A1", "m.test", "t1", msgs); err != nil {
			t.Fatal(err)
		}
		if bus.count(TopicToDevice) != 1 {
			t.Fatalf("%d notices", bus.count(TopicToDevice))
		}
		upto := s.ToDevicePosition()
		b1, last, err := s.ToDeviceMessages(ctx, "@b:x", "B1", 0, upto, 100)
		if err != nil || len(b1) != 1 || last == 0 {
			t.Fatalf("B1: %s %v", b1, err)
		}
		var ev struct {
			Sender  string         `json:"sender"`
			Type    string         `json:"type"`
			Content map[string]int `json:"content"`
		}
		if err := json.Unmarshal(b1[0], &ev); err != nil || ev.Sender != "@a:x" || ev.Type != "m.test" || ev.Content["n"] != 1 {
			t.Fatalf("B1 event %s", b1[0])
		}
		b2, _, _ := s.ToDeviceMessages(ctx, "@b:x", "B2", 0, upto, 100)
		if len(b2) != 1 || !json.Valid(b2[0]) || string(b2[0]) != `{"sender":"@a:x","type":"m.test","content":{"n":2}}` {
			t.Fatalf("B2 %s", b2)
		}
		var lo, hi int64
		if err := s.ToDeviceBacklog(ctx, func(u, d string, l, h int64) {
			if u == "@b:x" && d == "B1" {
				lo, hi = l, h
			}
		}); err != nil || lo != last || hi != last {
			t.Fatalf("backlog %d %d %v", lo, hi, err)
		}
		if err := s.AckToDevice(ctx, "@b:x", "B1", last); err != nil {
			t.Fatal(err)
		}
		if err := s.FlushAcks(ctx); err != nil {
			t.Fatal(err)
		}
		if b1, _, _ = s.ToDeviceMessages(ctx, "@b:x", "B1", 0, upto, 100); len(b1) != 0 {
			t.Fatalf("acknowledged messages still there: %s", b1)
		}
		for _, tc := range []struct {
			name, typ, txn string
			msgs           map[string]map[string]json.RawMessage
			code           string
		}{
			{"content not an object", "m.test", "t2", map[string]map[string]json.RawMessage{"@b:x": {"B1": json.RawMessage(`"x"`)}}, "M_BAD_JSON"},
			{"bad user", "m.test", "t3", map[string]map[string]json.RawMessage{"bob": {"B1": json.RawMessage(`{}`)}}, "M_INVALID_PARAM"},
			{"empty type", "", "t4", nil, "M_INVALID_PARAM"},
		} {
			if err := s.SendToDevice(ctx, "@a:x", "A1", tc.typ, tc.txn, tc.msgs); errcode(err) != tc.code {
				t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
			}
		}
	})
}

// signer makes ed25519 keys and signs objects as a client would.
type signer struct {
	pub  string
	priv ed25519.PrivateKey
}

func newSigner(t *testing.T) signer {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return signer{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

func (s signer) sign(t *testing.T, user string, obj any) json.RawMessage {
	t.Helper()
	raw, _ := json.Marshal(obj)
	out, err := gomatrixserverlib.SignJSON(user, gomatrixserverlib.KeyID("ed25519:"+s.pub), s.priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func crossKeyObj(user, usage, pub string) map[string]any {
	return map[string]any{"user_id": user, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pub: pub}}
}

func TestCrossSigning(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		addDevice(t, db, "@a:x", "DEV1", "")
		addDevice(t, db, "@b:x", "BDEV", "")
		const a, b = "@a:x", "@b:x"
		master, ssk, usk, dev := newSigner(t), newSigner(t), newSigner(t), newSigner(t)
		// DEV1's device keys carry the ed25519 key of dev.
		devKeys := map[string]any{"user_id": a, "device_id": "DEV1", "algorithms": []string{"m.megolm.v1.aes-sha2"},
			"keys": map[string]string{"ed25519:DEV1": dev.pub, "curve25519:DEV1": "cu"}}
		devKeysJSON := func() json.RawMessage {
			raw, _ := json.Marshal(devKeys)
			out, _ := gomatrixserverlib.SignJSON(a, "ed25519:DEV1", dev.priv, raw)
			return out
		}
		if _, err := s.Upload(ctx, a, "DEV1", UploadRequest{DeviceKeys: devKeysJSON()}); err != nil {
			t.Fatal(err)
		}
		req := SigningKeys{
			Master:      json.RawMessage(mustJSON(crossKeyObj(a, "master", master.pub))),
			SelfSigning: master.sign(t, a, crossKeyObj(a, "self_signing", ssk.pub)),
			UserSigning: master.sign(t, a, crossKeyObj(a, "user_signing", usk.pub)),
		}
		if need, err := s.SigningKeysNeedAuth(ctx, a, req); err != nil || need {
			t.Fatalf("first upload needs auth: %v %v", need, err)
		}
		// Refusals first: a self-signing key not signed by the master key.
		bad := req
		bad.SelfSigning = json.RawMessage(mustJSON(crossKeyObj(a, "self_signing", ssk.pub)))
		if err := s.UploadSigningKeys(ctx, a, bad, false); errcode(err) != "M_INVALID_SIGNATURE" {
			t.Fatalf("unsigned self-signing key: %v", err)
		}
		bad = SigningKeys{Master: json.RawMessage(mustJSON(crossKeyObj(b, "master", master.pub)))}
		if err := s.UploadSigningKeys(ctx, a, bad, false); errcode(err) != "M_INVALID_PARAM" {
			t.Fatalf("someone else's master key: %v", err)
		}
		if err := s.UploadSigningKeys(ctx, a, SigningKeys{SelfSigning: req.SelfSigning}, false); errcode(err) != "M_MISSING_PARAM" {
			t.Fatalf("self-signing key without a master key: %v", err)
		}
		// An upload without keys changes nothing; while there is no master
		// key it needs no auth, once there is it asks for it (clients send
		// one to learn the flows).
		pos := s.DeviceListPosition()
		if err := s.UploadSigningKeys(ctx, a, SigningKeys{}, false); err != nil || s.DeviceListPosition() != pos {
			t.Fatalf("empty upload before the first: %v", err)
		}
		if err := s.UploadSigningKeys(ctx, a, req, false); err != nil {
			t.Fatal(err)
		}
		if s.DeviceListPosition() <= pos {
			t.Fatal("cross-signing upload did not change the device list")
		}
		if err := s.UploadSigningKeys(ctx, a, SigningKeys{}, false); !errors.Is(err, ErrAuthNeeded) {
			t.Fatalf("empty upload with a master key: %v", err)
		}
		if need, _ := s.SigningKeysNeedAuth(ctx, a, SigningKeys{}); !need {
			t.Fatal("an empty upload with a master key needs no auth")
		}
		pos = s.DeviceListPosition()
		if err := s.UploadSigningKeys(ctx, a, SigningKeys{}, true); err != nil || s.DeviceListPosition() != pos {
			t.Fatalf("empty upload after auth: %v", err)
		}
		if q, _ := s.Query(ctx, a, map[string][]string{a: {}}); q.MasterKeys[a] == nil || q.SelfSigningKeys[a] == nil {
			t.Fatal("an empty upload removed keys")
		}
		if need, _ := s.SigningKeysNeedAuth(ctx, a, req); need {
			t.Fatal("re-uploading the same keys needs auth")
		}
		other := newSigner(t)
		replace := SigningKeys{Master: json.RawMessage(mustJSON(crossKeyObj(a, "master", other.pub)))}
		if need, _ := s.SigningKeysNeedAuth(ctx, a, replace); !need {
			t.Fatal("replacing the master key needs no auth")
		}
		if err := s.UploadSigningKeys(ctx, a, replace, false); !errors.Is(err, ErrAuthNeeded) {
			t.Fatalf("replacing the master key without auth: %v", err)
		}

		// B sees A's master and self-signing keys, not the user-signing key.
		q, err := s.Query(ctx, b, map[string][]string{a: {}})
		if err != nil || q.MasterKeys[a] == nil || q.SelfSigningKeys[a] == nil || q.UserSigningKeys[a] != nil {
			t.Fatalf("query by b: %+v %v", q, err)
		}
		if q, _ = s.Query(ctx, a, map[string][]string{a: {}}); q.UserSigningKeys[a] == nil {
			t.Fatal("a does not see their user-signing key")
		}

		// A signs DEV1 with the self-signing key, the master key with DEV1,
		// and B's master key with the user-signing key.
		bMaster := newSigner(t)
		if err := s.UploadSigningKeys(ctx, b, SigningKeys{Master: json.RawMessage(mustJSON(crossKeyObj(b, "master", bMaster.pub)))}, false); err != nil {
			t.Fatal(err)
		}
		signedDev := ssk.sign(t, a, json.RawMessage(devKeysJSON()))
		signedMaster := dev.signAs(t, a, "ed25519:DEV1", crossKeyObj(a, "master", master.pub))
		signedB := usk.sign(t, a, crossKeyObj(b, "master", bMaster.pub))
		forged := newSigner(t).signAs(t, a, "ed25519:"+ssk.pub, devKeys)
		failures, err := s.UploadSignatures(ctx, a, map[string]map[string]json.RawMessage{
			a: {"DEV1": signedDev, master.pub: signedMaster, "NOPE": signedDev},
			b: {bMaster.pub: signedB, "notakey": signedB},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(failures[a]) != 1 || failures[a]["NOPE"] == nil || len(failures[b]) != 1 || failures[b]["notakey"] == nil {
			t.Fatalf("failures %v", failures)
		}
		failures, err = s.UploadSignatures(ctx, a, map[string]map[string]json.RawMessage{a: {"DEV1": forged}})
		if err != nil || failures[a]["DEV1"] == nil {
			t.Fatalf("forged signature: %v %v", failures, err)
		}
		q, _ = s.Query(ctx, a, map[string][]string{a: nil, b: nil})
		var dk struct {
			Signatures map[string]map[string]string `json:"signatures"`
		}
		_ = json.Unmarshal(q.DeviceKeys[a]["DEV1"], &dk)
		if dk.Signatures[a]["ed25519:"+ssk.pub] == "" || dk.Signatures[a]["ed25519:DEV1"] == "" {
			t.Fatalf("device keys signatures %v", dk.Signatures)
		}
		_ = json.Unmarshal(q.MasterKeys[a], &dk)
		if dk.Signatures[a]["ed25519:DEV1"] == "" {
			t.Fatalf("master key signatures %v", dk.Signatures)
		}
		_ = json.Unmarshal(q.MasterKeys[b], &dk)
		if dk.Signatures[a]["ed25519:"+usk.pub] == "" {
			t.Fatalf("a does not see their signature on b's master key: %v", dk.Signatures)
		}
		// B does not see A's user-signing signature on B's master key.
		q, _ = s.Query(ctx, b, map[string][]string{b: nil})
		dk.Signatures = nil
		_ = json.Unmarshal(q.MasterKeys[b], &dk)
		if dk.Signatures[a] != nil {
			t.Fatalf("b sees a's signature: %v", dk.Signatures)
		}
	})
}

func (s signer) signAs(t *testing.T, user, keyID string, obj any) json.RawMessage {
	t.Helper()
	raw, _ := json.Marshal(obj)
	out, err := gomatrixserverlib.SignJSON(user, gomatrixserverlib.KeyID(keyID), s.priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func TestCheckUserID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{{"@a:x", true}, {"@a:x:8448", true}, {"a:x", false}, {"@a", false}, {"@:", false}, {"", false}} {
		if err := CheckUserID(tc.id); (err == nil) != tc.ok {
			t.Errorf("%q: %v", tc.id, err)
		}
	}
}

// TestStreamPositionsSurviveRestart: to-device rows are deleted once
// delivered and a device list change may leave no row, yet clients keep
// sync tokens with those positions. A restarted service must hand out
// positions above them: otherwise a message queued after the restart gets
// a position the device's token already covers, and the device's next sync
// deletes it as acknowledged without ever receiving it.
func TestStreamPositionsSurviveRestart(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		addDevice(t, db, "@a:x", "A1", "")
		addDevice(t, db, "@b:x", "B1", "")
		for i := 0; i < 3; i++ {
			msgs := map[string]map[string]json.RawMessage{"@b:x": {"B1": json.RawMessage(`{}`)}}
			if err := s.SendToDevice(ctx, "@a:x", "A1", "m.test", fmt.Sprint("t", i), msgs); err != nil {
				t.Fatal(err)
			}
		}
		td := s.ToDevicePosition()
		if err := s.AckToDevice(ctx, "@b:x", "B1", td); err != nil {
			t.Fatal(err)
		}
		// Identical device keys twice: the second upload changes nothing
		// but its position is visible (and may be in a token).
		dk := deviceKeysJSON("@b:x", "B1", "ed", "curve")
		for i := 0; i < 2; i++ {
			if _, err := s.Upload(ctx, "@b:x", "B1", UploadRequest{DeviceKeys: dk}); err != nil {
				t.Fatal(err)
			}
		}
		dl := s.DeviceListPosition()
		s.Close()

		s2, _ := newTestService(t, db)
		if got := s2.ToDevicePosition(); got < td {
			t.Errorf("to-device position went back from %d to %d across a restart", td, got)
		}
		if got := s2.DeviceListPosition(); got < dl {
			t.Errorf("device list position went back from %d to %d across a restart", dl, got)
		}
	})
}

// TestClaimOldestUploadFirst: one-time keys are claimed in the order they
// were uploaded (keys of one upload by key ID), whatever their IDs, also
// when an earlier upload's keys are not all claimed before a later upload.
func TestClaimOldestUploadFirst(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		addDevice(t, db, "@a:x", "DEV1", "")
		upload := func(ids ...string) {
			t.Helper()
			keys := map[string]json.RawMessage{}
			for _, id := range ids {
				keys["signed_curve25519:"+id] = json.RawMessage(`{"key":"` + id + `"}`)
			}
			if _, err := s.Upload(ctx, "@a:x", "DEV1", UploadRequest{OneTimeKeys: keys}); err != nil {
				t.Fatal(err)
			}
		}
		claim := func() string {
			t.Helper()
			r, err := s.Claim(ctx, map[string]map[string]string{"@a:x": {"DEV1": "signed_curve25519"}})
			if err != nil {
				t.Fatal(err)
			}
			for id := range r.OneTimeKeys["@a:x"]["DEV1"] {
				return strings.TrimPrefix(id, "signed_curve25519:")
			}
			return ""
		}
		upload("z9", "z1")
		upload("a0")
		if got := claim(); got != "z1" {
			t.Fatalf("first claim: %s", got)
		}
		upload("a5", "m")
		// z9 is still the oldest; then a0; then the last upload by ID.
		var order []string
		for i := 0; i < 5; i++ {
			order = append(order, claim())
		}
		if strings.Join(order, ",") != "z9,a0,a5,m," {
			t.Fatalf("claim order: %v", order)
		}
		// Once all are gone, numbering starts over and still orders uploads.
		upload("q")
		upload("b")
		if a, b := claim(), claim(); a != "q" || b != "b" {
			t.Fatalf("after emptying: %s %s", a, b)
		}
	})
}

// TestDeviceKeysReupload: the same device keys again change nothing (no
// device list change); other identity keys for the same device replace the
// stored ones and are a device list change, as on Synapse.
func TestDeviceKeysReupload(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newTestService(t, db)
		addDevice(t, db, "@a:x", "DEV1", "")
		if _, err := s.Upload(ctx, "@a:x", "DEV1", UploadRequest{DeviceKeys: deviceKeysJSON("@a:x", "DEV1", "edA", "cuA")}); err != nil {
			t.Fatal(err)
		}
		changedAt := func() int64 {
			t.Helper()
			var at int64
			if err := s.AllDeviceListChanges(ctx, func(u string, p int64) {
				if u == "@a:x" {
					at = p
				}
			}); err != nil {
				t.Fatal(err)
			}
			return at
		}
		pos := changedAt()
		if _, err := s.Upload(ctx, "@a:x", "DEV1", UploadRequest{DeviceKeys: deviceKeysJSON("@a:x", "DEV1", "edA", "cuA")}); err != nil {
			t.Fatal(err)
		}
		if p := changedAt(); p != pos {
			t.Fatalf("identical re-upload is a device list change: %d → %d", pos, p)
		}
		if _, err := s.Upload(ctx, "@a:x", "DEV1", UploadRequest{DeviceKeys: deviceKeysJSON("@a:x", "DEV1", "edB", "cuB")}); err != nil {
			t.Fatalf("changed identity keys: %v", err)
		}
		if p := changedAt(); p <= pos {
			t.Fatalf("changed keys are no device list change: %d → %d", pos, p)
		}
		q, err := s.Query(ctx, "@a:x", map[string][]string{"@a:x": nil})
		if err != nil {
			t.Fatal(err)
		}
		if dk := string(q.DeviceKeys["@a:x"]["DEV1"]); !strings.Contains(dk, `"ed25519:DEV1":"edB"`) {
			t.Fatalf("stored keys: %s", dk)
		}
	})
}
