package sytest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/id"
)

// backupSession encrypts a Megolm session for the backup, as a client does.
func backupSession(t *testing.T, key *backup.MegolmBackupKey, sessionKey string, first int, verified bool) mautrix.ReqKeyBackupData {
	t.Helper()
	enc, err := backup.EncryptSessionData(key, backup.MegolmSessionData{
		Algorithm: id.AlgorithmMegolmV1, SenderKey: "senderkey", SessionKey: sessionKey,
		SenderClaimedKeys: backup.SenderClaimedKeys{Ed25519: "ed"}, ForwardingKeyChain: []string{},
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	return mautrix.ReqKeyBackupData{FirstMessageIndex: first, IsVerified: verified, SessionData: raw}
}

// TestKeyBackup drives server-side key backup as Element's crypto does: no
// backup yet (a routed 404), a new version, keys in, the better-key rule, a
// second device restoring and decrypting the keys, and the wrong-version error.
func TestKeyBackup(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		_, err := alice.GetKeyBackupLatestVersion(ctx)
		mustErr(t, "latest backup before any", err, 404, "M_NOT_FOUND")

		key, err := backup.NewMegolmBackupKey()
		if err != nil {
			t.Fatal(err)
		}
		authData := backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(key.PublicKey().Bytes()))}
		created, err := alice.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: authData})
		if err != nil {
			t.Fatal(err)
		}
		v1 := created.Version

		room := id.RoomID("!encrypted:localhost")
		up, err := alice.PutKeysInBackup(ctx, v1, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{
			room: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{
				"sess1": backupSession(t, key, "original-key", 5, false),
				"sess2": backupSession(t, key, "second-key", 0, false),
			}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if up.Count != 2 || up.ETag == "" {
			t.Fatalf("upload answer %+v", up)
		}
		// A key that decrypts less (higher first_message_index) does not replace it...
		worse, err := alice.PutKeysInBackupForRoomAndSession(ctx, v1, room, "sess1", ptrTo(backupSession(t, key, "worse-key", 9, false)))
		if err != nil || worse.ETag != up.ETag {
			t.Fatalf("worse key: %+v %v (etag before %s)", worse, err, up.ETag)
		}
		// ... a verified one does.
		better, err := alice.PutKeysInBackupForRoomAndSession(ctx, v1, room, "sess1", ptrTo(backupSession(t, key, "verified-key", 7, true)))
		if err != nil || better.ETag == up.ETag || better.Count != 2 {
			t.Fatalf("better key: %+v %v", better, err)
		}

		// A second device of alice restores from the backup with the recovery key.
		phone := s.login(t, "alice")
		latest, err := phone.GetKeyBackupLatestVersion(ctx)
		if err != nil || latest.Version != v1 || latest.Count != 2 || latest.AuthData.PublicKey != authData.PublicKey {
			t.Fatalf("latest version on the second device: %+v %v", latest, err)
		}
		all, err := phone.GetKeyBackup(ctx, latest.Version)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for sid, kd := range all.Rooms[room].Sessions {
			sd, err := kd.SessionData.Decrypt(key)
			if err != nil {
				t.Fatalf("decrypt %s: %v", sid, err)
			}
			got[sid.String()] = sd.SessionKey
		}
		if got["sess1"] != "verified-key" || got["sess2"] != "second-key" {
			t.Fatalf("restored keys %v", got)
		}
		one, err := phone.GetKeyBackupForRoomAndSession(ctx, v1, room, "sess1")
		if err != nil || !one.IsVerified || one.FirstMessageIndex != 7 {
			t.Fatalf("one session: %+v %v", one, err)
		}
		_, err = phone.GetKeyBackupForRoomAndSession(ctx, v1, room, "nosuch")
		mustErr(t, "unknown session", err, 404, "M_NOT_FOUND")

		// A new backup version: uploads to the old one get the current version back.
		created2, err := alice.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: authData})
		if err != nil {
			t.Fatal(err)
		}
		_, err = alice.PutKeysInBackupForRoomAndSession(ctx, v1, room, "sess3", ptrTo(backupSession(t, key, "k3", 0, false)))
		mustErr(t, "upload to the old version", err, 403, "M_WRONG_ROOM_KEYS_VERSION")
		r := s.do(t, "PUT", v3+"/room_keys/keys/"+p(room)+"/sess3?version="+string(v1), alice.AccessToken,
			backupSession(t, key, "k3", 0, false)).expectErr(t, 403, "M_WRONG_ROOM_KEYS_VERSION")
		if r.str("current_version") != string(created2.Version) {
			t.Fatalf("current_version: %s", r)
		}
		// Updating a version keeps its algorithm.
		s.do(t, "PUT", v3+"/room_keys/version/"+string(created2.Version), alice.AccessToken,
			map[string]any{"algorithm": "m.other", "auth_data": authData}).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "PUT", v3+"/room_keys/version/"+string(created2.Version), alice.AccessToken,
			map[string]any{"algorithm": id.KeyBackupAlgorithmMegolmBackupV1, "auth_data": authData, "version": string(created2.Version)}).expect(t, 200)
		// Deleting it makes the first version current again.
		if err := alice.DeleteKeyBackupVersion(ctx, created2.Version); err != nil {
			t.Fatal(err)
		}
		if latest, err := alice.GetKeyBackupLatestVersion(ctx); err != nil || latest.Version != v1 {
			t.Fatalf("after delete: %+v %v", latest, err)
		}
		// Other users see none of it.
		bob := s.register(t, "bob")
		_, err = bob.GetKeyBackupVersion(ctx, v1)
		mustErr(t, "someone else's backup", err, 404, "M_NOT_FOUND")
		s.do(t, "GET", v3+"/room_keys/keys", alice.AccessToken, nil).expectErr(t, 400, "M_MISSING_PARAM")
		s.do(t, "PUT", v3+"/room_keys/keys/%21r%00:localhost/s?version="+string(v1), alice.AccessToken,
			backupSession(t, key, "k", 0, false)).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", v3+"/room_keys/keys/%21r%00:localhost?version="+string(v1), alice.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "PUT", v3+"/room_keys/keys?version="+string(v1), alice.AccessToken, `{"rooms":{"!r:localhost":{"sessions":{"s":{"first_message_index":0}}}}}`).expectErr(t, 400, "M_BAD_JSON")
		del, err := alice.DeleteKeyBackup(ctx, v1)
		if err != nil || del.Count != 0 {
			t.Fatalf("delete all keys: %+v %v", del, err)
		}
	})
}

// TestTurnServer: without TURN settings the answer is {}; with a shared
// secret, time-limited credentials for the user.
func TestTurnServer(t *testing.T) {
	s := startServer(t, "sqlite")
	cli := s.register(t, "alice")
	r := s.do(t, "GET", v3+"/voip/turnServer", cli.AccessToken, nil).expect(t, 200)
	if strings.TrimSpace(string(r.Raw)) != "{}" {
		t.Fatalf("unconfigured: %s", r)
	}
	s2 := startServer(t, "sqlite", "HAVEN_TURN_URIS=turn:turn.example.com:3478?transport=udp,turns:turn.example.com:5349",
		"HAVEN_TURN_SHARED_SECRET=0123456789abcdef0123", "HAVEN_TURN_USER_LIFETIME=30m")
	cli2 := s2.register(t, "alice")
	resp, err := cli2.TurnServer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(resp.Username, ":"+cli2.UserID.String()) || resp.Password == "" || resp.TTL != 1800 || len(resp.URIs) != 2 {
		t.Fatalf("credentials %+v", resp)
	}
}

func ptrTo[T any](v T) *T { return &v }
