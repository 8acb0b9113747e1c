package sytest

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// testKey is an ed25519 key pair that signs JSON as a client does.
type testKey struct {
	pub  string
	priv ed25519.PrivateKey
}

func newTestKey(t *testing.T) testKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

func (k testKey) sign(t *testing.T, user, keyID string, obj any) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	out, err := gomatrixserverlib.SignJSON(user, gomatrixserverlib.KeyID(keyID), k.priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// deviceKeysOf builds a client's signed device keys.
func deviceKeysOf(t *testing.T, cli *mautrix.Client, k testKey) json.RawMessage {
	return k.sign(t, cli.UserID.String(), "ed25519:"+cli.DeviceID.String(), map[string]any{
		"user_id": cli.UserID, "device_id": cli.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + cli.DeviceID.String(): k.pub, "curve25519:" + cli.DeviceID.String(): "curve-" + k.pub},
	})
}

func TestKeysAndToDevice(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice, bob := s.register(t, "alice"), s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		join(t, bob, room.String())
		_, bobSince := syncNow(t, bob, "")
		aliceKey, bobKey := newTestKey(t), newTestKey(t)

		// Alice uploads device keys, two one-time keys and a fallback key.
		otk := func(k testKey, cli *mautrix.Client, n int) json.RawMessage {
			return k.sign(t, cli.UserID.String(), "ed25519:"+cli.DeviceID.String(), map[string]any{"key": fmt.Sprintf("otk%d-%s", n, k.pub[:8])})
		}
		r := s.do(t, "POST", v3+"/keys/upload", alice.AccessToken, map[string]any{
			"device_keys":   deviceKeysOf(t, alice, aliceKey),
			"one_time_keys": map[string]any{"signed_curve25519:AAAA": otk(aliceKey, alice, 1), "signed_curve25519:AAAB": otk(aliceKey, alice, 2)},
			"fallback_keys": map[string]any{"signed_curve25519:FFFF": map[string]any{"key": "fallback", "fallback": true}},
		}).expect(t, 200)
		if counts, _ := r.JSON["one_time_key_counts"].(map[string]any); counts["signed_curve25519"] != 2.0 {
			t.Fatalf("counts: %s", r)
		}

		// Bob, who shares a room with Alice, hears that her keys changed.
		_, bobSince = syncUntil(t, bob, bobSince, "alice in device_lists.changed", func(r *mautrix.RespSync) bool {
			return slices.Contains(r.DeviceLists.Changed, alice.UserID)
		})
		// Alice's own syncs carry her key counts, every time.
		resp, aliceSince := syncNow(t, alice, "")
		if resp.DeviceOTKCount.SignedCurve25519 != 2 || !slices.Contains(resp.FallbackKeys, id.KeyAlgorithm("signed_curve25519")) {
			t.Fatalf("alice's counts: %+v %v", resp.DeviceOTKCount, resp.FallbackKeys)
		}

		// Bob uploads his keys through mautrix and both query each other.
		var bobDK mautrix.DeviceKeys
		if err := json.Unmarshal(deviceKeysOf(t, bob, bobKey), &bobDK); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.UploadKeys(ctx, &mautrix.ReqUploadKeys{DeviceKeys: &bobDK}); err != nil {
			t.Fatal(err)
		}
		q, err := bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}, "@nobody:" + id.UserID(alice.UserID.Homeserver()): {}}})
		if err != nil {
			t.Fatal(err)
		}
		if dk, ok := q.DeviceKeys[alice.UserID][alice.DeviceID]; !ok || string(dk.Keys.GetEd25519(alice.DeviceID)) != aliceKey.pub {
			t.Fatalf("bob's query: %+v", q.DeviceKeys)
		}
		q, err = alice.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{bob.UserID: {bob.DeviceID}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := q.DeviceKeys[bob.UserID][bob.DeviceID]; !ok {
			t.Fatalf("alice's query: %+v", q.DeviceKeys)
		}

		// Bob claims Alice's two one-time keys, then gets her fallback key.
		claimed := map[id.KeyID]bool{}
		for i := 0; i < 3; i++ {
			c, err := bob.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{alice.UserID: {alice.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
			if err != nil {
				t.Fatal(err)
			}
			for kid := range c.OneTimeKeys[alice.UserID][alice.DeviceID] {
				if claimed[kid] && kid != "signed_curve25519:FFFF" {
					t.Fatalf("key %s handed out twice", kid)
				}
				claimed[kid] = true
			}
		}
		if len(claimed) != 3 || !claimed["signed_curve25519:FFFF"] {
			t.Fatalf("claimed %v", claimed)
		}
		resp, _ = syncNow(t, alice, aliceSince)
		if resp.DeviceOTKCount.SignedCurve25519 != 0 || len(resp.FallbackKeys) != 0 {
			t.Fatalf("counts after claims: %+v %v", resp.DeviceOTKCount, resp.FallbackKeys)
		}

		// Bob sends Alice a to-device message; a retry with the same
		// transaction ID is not queued again.
		typ := event.Type{Type: "org.haven.test", Class: event.ToDeviceEventType}
		txnID := txn()
		for i := 0; i < 2; i++ {
			s.do(t, "PUT", v3+"/sendToDevice/"+typ.Type+"/"+txnID, bob.AccessToken, map[string]any{
				"messages": map[string]any{alice.UserID.String(): map[string]any{"*": map[string]any{"n": 1}}},
			}).expect(t, 200)
		}
		if _, err := bob.SendToDevice(ctx, typ, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			alice.UserID: {alice.DeviceID: {Raw: map[string]any{"n": 2}}},
		}}); err != nil {
			t.Fatal(err)
		}
		var got []int
		before := aliceSince
		_, after := syncUntil(t, alice, aliceSince, "two to-device messages", func(r *mautrix.RespSync) bool {
			for _, ev := range r.ToDevice.Events {
				if ev.Type.Type == typ.Type && ev.Sender == bob.UserID {
					n, _ := ev.Content.Raw["n"].(float64)
					got = append(got, int(n))
				}
			}
			return len(got) >= 2
		})
		if !slices.Equal(got, []int{1, 2}) {
			t.Fatalf("to-device messages %v", got)
		}
		// Syncing past them acknowledges them: they are deleted, so even the
		// old token no longer brings them.
		syncNow(t, alice, after)
		resp, _ = syncNow(t, alice, before)
		if len(resp.ToDevice.Events) != 0 {
			t.Fatalf("acknowledged messages delivered again: %d", len(resp.ToDevice.Events))
		}

		// /keys/changes between Bob's tokens names Alice.
		_, bobNow := syncNow(t, bob, bobSince)
		first := s.do(t, "GET", v3+"/keys/changes?"+url.Values{"from": {"s0"}, "to": {bobNow}}.Encode(), bob.AccessToken, nil).expect(t, 200)
		if changed, _ := first.JSON["changed"].([]any); !slices.Contains(changed, any(alice.UserID.String())) {
			t.Fatalf("keys/changes: %s", first)
		}

		// A send retried after a restart (the client never saw the answer)
		// is not queued again: transaction IDs are stored.
		_, aliceNow := syncNow(t, alice, after)
		retryTxn := txn()
		retry := map[string]any{"messages": map[string]any{alice.UserID.String(): map[string]any{alice.DeviceID.String(): map[string]any{"n": 3}}}}
		s.do(t, "PUT", v3+"/sendToDevice/"+typ.Type+"/"+retryTxn, bob.AccessToken, retry).expect(t, 200)
		s.kill()
		s.start()
		s.do(t, "PUT", v3+"/sendToDevice/"+typ.Type+"/"+retryTxn, bob.AccessToken, retry).expect(t, 200)
		s.do(t, "PUT", v3+"/sendToDevice/"+typ.Type+"/"+txn(), bob.AccessToken, map[string]any{
			"messages": map[string]any{alice.UserID.String(): map[string]any{alice.DeviceID.String(): map[string]any{"n": 4}}},
		}).expect(t, 200)
		got = nil
		syncUntil(t, alice, aliceNow, "the messages sent around the restart", func(r *mautrix.RespSync) bool {
			for _, ev := range r.ToDevice.Events {
				if ev.Type.Type == typ.Type {
					n, _ := ev.Content.Raw["n"].(float64)
					got = append(got, int(n))
				}
			}
			return slices.Contains(got, 4)
		})
		if !slices.Equal(got, []int{3, 4}) {
			t.Fatalf("to-device messages around the restart: %v", got)
		}

		// Malformed and unauthorised requests.
		s.do(t, "POST", v3+"/keys/upload", alice.AccessToken, map[string]any{"device_keys": deviceKeysOf(t, bob, bobKey)}).expectErr(t, 400, "M_INVALID_PARAM")
		// New identity keys for an existing device replace the old ones (as on Synapse).
		s.do(t, "POST", v3+"/keys/upload", alice.AccessToken, map[string]any{"device_keys": deviceKeysOf(t, alice, newTestKey(t))}).expect(t, 200)
		s.do(t, "POST", v3+"/keys/upload", alice.AccessToken, `{"one_time_keys": 5}`).expectErr(t, 400, "M_BAD_JSON")
		s.do(t, "POST", v3+"/keys/upload", alice.AccessToken, `{nope`).expectErr(t, 400, "M_NOT_JSON")
		s.do(t, "POST", v3+"/keys/query", alice.AccessToken, map[string]any{}).expectErr(t, 400, "M_MISSING_PARAM")
		s.do(t, "POST", v3+"/keys/query", alice.AccessToken, map[string]any{"device_keys": map[string]any{"bob": []string{}}}).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "POST", v3+"/keys/claim", alice.AccessToken, map[string]any{}).expectErr(t, 400, "M_MISSING_PARAM")
		s.do(t, "GET", v3+"/keys/changes", alice.AccessToken, nil).expectErr(t, 400, "M_MISSING_PARAM")
		s.do(t, "GET", v3+"/keys/changes?from=garbage", alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "PUT", v3+"/sendToDevice/m.x/"+txn(), alice.AccessToken, map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{"*": "text"}}}).expectErr(t, 400, "M_BAD_JSON")
		s.do(t, "PUT", v3+"/sendToDevice/m.x/"+txn(), alice.AccessToken, map[string]any{}).expectErr(t, 400, "M_MISSING_PARAM")
		s.do(t, "POST", v3+"/keys/query", "", map[string]any{"device_keys": map[string]any{}}).expectErr(t, 401, "M_MISSING_TOKEN")
	})
}

func TestCrossSigningUpload(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice, bob := s.register(t, "alice"), s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		join(t, bob, room.String())
		_, bobSince := syncNow(t, bob, "")
		user := alice.UserID.String()
		devKey := newTestKey(t)
		dk := deviceKeysOf(t, alice, devKey)
		s.do(t, "POST", v3+"/keys/upload", alice.AccessToken, map[string]any{"device_keys": dk}).expect(t, 200)

		master, ssk, usk := newTestKey(t), newTestKey(t), newTestKey(t)
		key := func(usage, pub string) map[string]any {
			return map[string]any{"user_id": user, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pub: pub}}
		}
		body := map[string]any{
			"master_key":       key("master", master.pub),
			"self_signing_key": master.sign(t, user, "ed25519:"+master.pub, key("self_signing", ssk.pub)),
			"user_signing_key": master.sign(t, user, "ed25519:"+master.pub, key("user_signing", usk.pub)),
		}
		// The first upload needs no password (spec v1.11); the same again neither.
		s.do(t, "POST", v3+"/keys/device_signing/upload", alice.AccessToken, body).expect(t, 200)
		s.do(t, "POST", v3+"/keys/device_signing/upload", alice.AccessToken, body).expect(t, 200)
		// An upload without keys (Element's Secure Backup set-up sends one to
		// learn the flows) gets the auth challenge, not a refusal; bob, who has
		// no master key, needs no auth for it and it changes nothing.
		if ch := s.do(t, "POST", "/_matrix/client/unstable/keys/device_signing/upload", alice.AccessToken, map[string]any{}).expect(t, 401); ch.JSON["flows"] == nil {
			t.Fatalf("no flows for an empty upload: %s", ch)
		}
		s.do(t, "POST", "/_matrix/client/unstable/keys/device_signing/upload", bob.AccessToken, map[string]any{}).expect(t, 200)
		// A new master key does.
		other := newTestKey(t)
		replace := map[string]any{"master_key": key("master", other.pub)}
		ch := s.do(t, "POST", v3+"/keys/device_signing/upload", alice.AccessToken, replace).expect(t, 401)
		if ch.str("session") == "" || ch.JSON["flows"] == nil {
			t.Fatalf("no UIA challenge: %s", ch)
		}
		replace["auth"] = map[string]any{"type": "m.login.password", "session": ch.str("session"), "password": "wrong",
			"identifier": map[string]any{"type": "m.id.user", "user": user}}
		s.do(t, "POST", v3+"/keys/device_signing/upload", alice.AccessToken, replace).expectErr(t, 401, "M_FORBIDDEN")
		// Keep the first master key: the signatures below are made with it.
		// A self-signing key not signed by the master key is refused.
		s.do(t, "POST", v3+"/keys/device_signing/upload", alice.AccessToken, map[string]any{
			"self_signing_key": key("self_signing", newTestKey(t).pub),
			"auth": map[string]any{"type": "m.login.password", "password": "password-alice",
				"identifier": map[string]any{"type": "m.id.user", "user": user}},
		}).expectErr(t, 400, "M_INVALID_SIGNATURE")

		// Alice signs her device with the self-signing key.
		var signed map[string]any
		_ = json.Unmarshal(ssk.sign(t, user, "ed25519:"+ssk.pub, json.RawMessage(dk)), &signed)
		r := s.do(t, "POST", v3+"/keys/signatures/upload", alice.AccessToken, map[string]any{
			user: map[string]any{alice.DeviceID.String(): signed, "NOTADEVICE": signed},
		}).expect(t, 200)
		failures, _ := r.JSON["failures"].(map[string]any)
		if mine, _ := failures[user].(map[string]any); len(mine) != 1 || mine["NOTADEVICE"] == nil {
			t.Fatalf("signature failures: %s", r)
		}
		q, err := bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}})
		if err != nil {
			t.Fatal(err)
		}
		mk, sk := q.MasterKeys[alice.UserID], q.SelfSigningKeys[alice.UserID]
		if string(mk.FirstKey()) != master.pub || string(sk.FirstKey()) != ssk.pub {
			t.Fatalf("cross-signing keys: %+v %+v", q.MasterKeys, q.SelfSigningKeys)
		}
		if _, ok := q.UserSigningKeys[alice.UserID]; ok {
			t.Fatal("bob sees alice's user-signing key")
		}
		sigs := q.DeviceKeys[alice.UserID][alice.DeviceID].Signatures
		if sigs[alice.UserID][id.NewKeyID(id.KeyAlgorithmEd25519, ssk.pub)] == "" {
			t.Fatalf("device signatures %v", sigs)
		}
		syncUntil(t, bob, bobSince, "alice's cross-signing change", func(r *mautrix.RespSync) bool {
			return slices.Contains(r.DeviceLists.Changed, alice.UserID)
		})

		// With her password, Alice replaces her master key.
		replace["auth"] = map[string]any{"type": "m.login.password", "password": "password-alice",
			"identifier": map[string]any{"type": "m.id.user", "user": user}}
		s.do(t, "POST", v3+"/keys/device_signing/upload", alice.AccessToken, replace).expect(t, 200)
		q, err = bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}})
		if err != nil {
			t.Fatal(err)
		}
		if mk := q.MasterKeys[alice.UserID]; string(mk.FirstKey()) != other.pub {
			t.Fatalf("master key after the replacement: %+v", q.MasterKeys)
		}
	})
}
