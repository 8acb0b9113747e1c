package keys

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// SigningKeys is the body of /keys/device_signing/upload; absent keys are nil.
type SigningKeys struct {
	Master      json.RawMessage
	SelfSigning json.RawMessage
	UserSigning json.RawMessage
}

// crossKey is a cross-signing key object.
type crossKey struct {
	UserID     string                       `json:"user_id"`
	Usage      []string                     `json:"usage"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// parsedKey is a checked cross-signing key: its public key and stored form.
type parsedKey struct {
	pub    string
	stored []byte
}

// decodeKey decodes an unpadded (or padded) base64 ed25519 public key.
func decodeKey(s string) (ed25519.PublicKey, bool) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, false
	}
	return ed25519.PublicKey(b), true
}

// checkCrossKey validates a cross-signing key of userID for the usage.
func checkCrossKey(raw json.RawMessage, userID, usage, field string) (parsedKey, error) {
	_, stored, err := stripObject(raw, field)
	if err != nil {
		return parsedKey{}, err
	}
	if len(stored) > MaxKeyBytes {
		return parsedKey{}, merr.TooLarge("%s is larger than %d bytes", field, MaxKeyBytes)
	}
	var k crossKey
	if err := json.Unmarshal(stored, &k); err != nil {
		return parsedKey{}, merr.BadJSON("%s has a field of the wrong type", field)
	}
	if k.UserID != userID {
		return parsedKey{}, merr.InvalidParam("%s.user_id must be %s", field, userID)
	}
	if !contains(k.Usage, usage) {
		return parsedKey{}, merr.InvalidParam("%s.usage must contain %s", field, usage)
	}
	if len(k.Keys) != 1 {
		return parsedKey{}, merr.InvalidParam("%s.keys must hold exactly one key", field)
	}
	for id, pub := range k.Keys {
		if id != "ed25519:"+pub {
			return parsedKey{}, merr.InvalidParam("%s.keys: the key ID must be ed25519:<public key>", field)
		}
		if _, ok := decodeKey(pub); !ok {
			return parsedKey{}, merr.InvalidParam("%s.keys: not an ed25519 public key", field)
		}
		return parsedKey{pub: pub, stored: stored}, nil
	}
	return parsedKey{}, merr.InvalidParam("%s.keys must hold exactly one key", field)
}

// verifySig checks that signerUser signed obj with the ed25519 key pub (unpadded base64).
func verifySig(obj []byte, signerUser, keyID, pub string) error {
	key, ok := decodeKey(pub)
	if !ok {
		return fmt.Errorf("not an ed25519 key")
	}
	return gomatrixserverlib.VerifyJSON(signerUser, gomatrixserverlib.KeyID(keyID), key, obj)
}

// parseSigningKeys checks every key given and the master key's signatures
// on the self-signing and user-signing keys (against the stored master key
// when none is given).
func parseSigningKeys(req SigningKeys, userID string, stored map[string]string) (map[string]parsedKey, error) {
	out := map[string]parsedKey{}
	for _, f := range []struct {
		raw        json.RawMessage
		typ, field string
	}{{req.Master, KeyMaster, "master_key"}, {req.SelfSigning, KeySelfSigning, "self_signing_key"}, {req.UserSigning, KeyUserSigning, "user_signing_key"}} {
		if isNull(f.raw) {
			continue
		}
		k, err := checkCrossKey(f.raw, userID, f.typ, f.field)
		if err != nil {
			return nil, err
		}
		out[f.typ] = k
	}
	if len(out) == 0 {
		return nil, merr.MissingParam("No cross-signing key given")
	}
	masterPub := ""
	if m, ok := out[KeyMaster]; ok {
		masterPub = m.pub
	} else if js, ok := stored[KeyMaster]; ok {
		masterPub = firstKey(js)
	}
	for _, typ := range []string{KeySelfSigning, KeyUserSigning} {
		k, ok := out[typ]
		if !ok {
			continue
		}
		if masterPub == "" {
			return nil, merr.MissingParam("No master key to verify the %s key with; upload the master key first", typ)
		}
		if err := verifySig(k.stored, userID, "ed25519:"+masterPub, masterPub); err != nil {
			return nil, merr.Custom(400, "M_INVALID_SIGNATURE", "The %s key is not signed by the master key: %s", typ, err.Error())
		}
	}
	return out, nil
}

// anyKey tells whether the upload carries at least one key.
func anyKey(req SigningKeys) bool {
	return !isNull(req.Master) || !isNull(req.SelfSigning) || !isNull(req.UserSigning)
}

// ErrAuthNeeded is returned by UploadSigningKeys when the upload needs
// user-interactive authentication and the caller has not done it.
var ErrAuthNeeded = errors.New("keys: user-interactive authentication needed")

// SigningKeysNeedAuth tells whether uploading these cross-signing keys
// needs user-interactive authentication (see needsAuth).
func (s *Service) SigningKeysNeedAuth(ctx context.Context, userID string, req SigningKeys) (bool, error) {
	stored, err := crossSigningKeysOf(ctx, s.db, []string{userID})
	if err != nil {
		return false, err
	}
	return needsAuth(stored[userID], req), nil
}

// needsAuth: not while the user has no master key (the first upload, spec
// v1.11, MSC3967), nor when every key given is the one already stored (a
// retried upload); replacing a key does, and so does an upload without any
// key once the user has a master key: clients send one to learn the flows a
// replacement takes (Element's Secure Backup set-up expects the 401).
func needsAuth(mine map[string]string, req SigningKeys) bool {
	if _, ok := mine[KeyMaster]; !ok {
		return false
	}
	if !anyKey(req) {
		return true
	}
	for _, f := range []struct {
		raw json.RawMessage
		typ string
	}{{req.Master, KeyMaster}, {req.SelfSigning, KeySelfSigning}, {req.UserSigning, KeyUserSigning}} {
		if isNull(f.raw) {
			continue
		}
		var k crossKey
		if json.Unmarshal(f.raw, &k) != nil {
			return true
		}
		old, ok := mine[f.typ]
		if !ok || len(k.Keys) != 1 {
			return true
		}
		for _, pub := range k.Keys {
			if pub != firstKey(old) {
				return true
			}
		}
	}
	return false
}

// UploadSigningKeys stores the user's cross-signing keys after checking
// them (user, usage, one ed25519 key, and the master key's signature on the
// other two). Unless authed, it returns ErrAuthNeeded when the upload needs
// user-interactive auth; the check and the write happen under the user's
// lock, so two racing first uploads cannot both skip it.
func (s *Service) UploadSigningKeys(ctx context.Context, userID string, req SigningKeys, authed bool) error {
	unlock := s.userLocks.Lock(userID)
	defer unlock()
	stored, err := crossSigningKeysOf(ctx, s.db, []string{userID})
	if err != nil {
		return err
	}
	// Every key is optional: an upload without any changes nothing, but
	// asks for auth as a replacement would (see needsAuth).
	if !anyKey(req) {
		if !authed && needsAuth(stored[userID], req) {
			return ErrAuthNeeded
		}
		return nil
	}
	keys, err := parseSigningKeys(req, userID, stored[userID])
	if err != nil {
		return err
	}
	if !authed && needsAuth(stored[userID], req) {
		return ErrAuthNeeded
	}
	now := s.now().UnixMilli()
	err = s.changeDeviceList(ctx, userID, listChange{crossSigning: true}, func(tx *storage.Tx) (bool, error) {
		changed := false
		for _, typ := range []string{KeyMaster, KeySelfSigning, KeyUserSigning} {
			k, ok := keys[typ]
			if !ok || stored[userID][typ] == string(k.stored) {
				continue
			}
			if _, err := tx.Exec(ctx, `INSERT INTO cross_signing_keys (user_id, key_type, key_json, ts) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json, ts = excluded.ts`, userID, typ, string(k.stored), now); err != nil {
				return false, fmt.Errorf("upsert %s key of %s: %w", typ, userID, err)
			}
			changed = true
		}
		return changed, nil
	})
	if err == nil {
		logging.From(ctx).WithFields(logrus.Fields{"user_id": userID, "keys": len(keys)}).Info("cross-signing keys uploaded")
	}
	return err
}

// signatureFailure is one entry of the failures of /keys/signatures/upload.
func signatureFailure(code, format string, args ...any) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"errcode": code, "error": fmt.Sprintf(format, args...)})
	return b
}

// signedPart is the canonical JSON of an object without signatures and
// unsigned: what a signature covers.
func signedPart(raw []byte) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	delete(obj, "signatures")
	delete(obj, "unsigned")
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.CanonicalJSON(b)
}

// sameSignedPart tells whether two objects carry the same signed content.
func sameSignedPart(a, b []byte) bool {
	x, err1 := signedPart(a)
	y, err2 := signedPart(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// UploadSignatures checks and stores signatures made by userID: on their
// own devices with their self-signing key, on their own master key with
// one of their devices, and on other users' master keys with their
// user-signing key. Signatures that fail go in the returned failures
// (user → key ID → error); the others are stored.
func (s *Service) UploadSignatures(ctx context.Context, userID string, req map[string]map[string]json.RawMessage) (map[string]map[string]json.RawMessage, error) {
	failures := map[string]map[string]json.RawMessage{}
	fail := func(u, k string, e json.RawMessage) {
		if failures[u] == nil {
			failures[u] = map[string]json.RawMessage{}
		}
		failures[u][k] = e
	}
	users := []string{userID}
	for u := range req {
		if err := CheckUserID(u); err != nil {
			return nil, err
		}
		if u != userID {
			users = append(users, u)
		}
	}
	unlock := s.userLocks.Lock(userID)
	defer unlock()
	csk, err := crossSigningKeysOf(ctx, s.db, users)
	if err != nil {
		return nil, err
	}
	ownDevices, err := s.deviceKeysOf(ctx, userID)
	if err != nil {
		return nil, err
	}
	mine := csk[userID]
	masterPub, sskPub, uskPub := firstKey(mine[KeyMaster]), firstKey(mine[KeySelfSigning]), firstKey(mine[KeyUserSigning])
	var rows []sigRow
	for _, u := range sortedKeys(req) {
		for _, k := range sortedKeys(req[u]) {
			raw := req[u][k]
			var obj struct {
				Signatures map[string]map[string]string `json:"signatures"`
			}
			if json.Unmarshal(raw, &obj) != nil {
				fail(u, k, signatureFailure("M_BAD_JSON", "Not a signed JSON object"))
				continue
			}
			mySigs := obj.Signatures[userID]
			switch {
			case u == userID && ownDevices[k] != "":
				// One of the user's devices, signed with the self-signing key.
				if sskPub == "" {
					fail(u, k, signatureFailure("M_NOT_FOUND", "You have no self-signing key"))
					continue
				}
				if !sameSignedPart(raw, []byte(ownDevices[k])) {
					fail(u, k, signatureFailure("M_INVALID_SIGNATURE", "The signed object is not the device's keys"))
					continue
				}
				id := "ed25519:" + sskPub
				if err := verifySig(raw, userID, id, sskPub); err != nil {
					fail(u, k, signatureFailure("M_INVALID_SIGNATURE", "No valid signature by the self-signing key: %s", err.Error()))
					continue
				}
				rows = append(rows, sigRow{u, k, userID, id, mySigs[id]})
			case u == userID && k == masterPub && masterPub != "":
				// The user's master key, signed by their devices.
				if !sameSignedPart(raw, []byte(mine[KeyMaster])) {
					fail(u, k, signatureFailure("M_INVALID_SIGNATURE", "The signed object is not your master key"))
					continue
				}
				n := 0
				for _, id := range sortedKeys(mySigs) {
					dev := strings.TrimPrefix(id, "ed25519:")
					devPub := deviceEd25519(ownDevices[dev], dev)
					if dev == id || dev == masterPub || devPub == "" {
						continue
					}
					if err := verifySig(raw, userID, id, devPub); err != nil {
						continue
					}
					rows = append(rows, sigRow{u, k, userID, id, mySigs[id]})
					n++
				}
				if n == 0 {
					fail(u, k, signatureFailure("M_INVALID_SIGNATURE", "No valid signature by one of your devices"))
				}
			case u != userID:
				// Another user's master key, signed with the user-signing key.
				theirs := csk[u][KeyMaster]
				if theirs == "" || firstKey(theirs) != k {
					fail(u, k, signatureFailure("M_NOT_FOUND", "%s has no master key %s", u, k))
					continue
				}
				if uskPub == "" {
					fail(u, k, signatureFailure("M_NOT_FOUND", "You have no user-signing key"))
					continue
				}
				if !sameSignedPart(raw, []byte(theirs)) {
					fail(u, k, signatureFailure("M_INVALID_SIGNATURE", "The signed object is not %s's master key", u))
					continue
				}
				id := "ed25519:" + uskPub
				if err := verifySig(raw, userID, id, uskPub); err != nil {
					fail(u, k, signatureFailure("M_INVALID_SIGNATURE", "No valid signature by the user-signing key: %s", err.Error()))
					continue
				}
				rows = append(rows, sigRow{u, k, userID, id, mySigs[id]})
			default:
				fail(u, k, signatureFailure("M_NOT_FOUND", "Unknown key %s", k))
			}
		}
	}
	if len(rows) == 0 {
		return failures, nil
	}
	// Signatures on the user's own devices and master key are part of
	// what other servers are told; those on other users' keys are not.
	var c listChange
	var signed []string
	for _, r := range rows {
		switch {
		case r.targetUser != userID:
		case r.targetKey == masterPub:
			c.crossSigning = true
		default:
			signed = append(signed, r.targetKey)
		}
	}
	c.devices = sortedUnique(signed)
	err = s.changeDeviceList(ctx, userID, c, func(tx *storage.Tx) (bool, error) {
		for _, r := range rows {
			if _, err := tx.Exec(ctx, `INSERT INTO key_signatures (target_user, target_key, signer_user, signer_key, signature) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (target_user, target_key, signer_user, signer_key) DO UPDATE SET signature = excluded.signature`,
				r.targetUser, r.targetKey, r.signerUser, r.signerKey, r.sig); err != nil {
				return false, fmt.Errorf("insert signature on %s %s: %w", r.targetUser, r.targetKey, err)
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return failures, nil
}

// deviceKeysOf loads the stored device keys of a user's existing devices.
func (s *Service) deviceKeysOf(ctx context.Context, userID string) (map[string]string, error) {
	rows, err := s.db.Query(ctx, `SELECT k.device_id, k.key_json FROM device_keys k
JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id WHERE k.user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("select device keys of %s: %w", userID, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var d, js string
		if err := rows.Scan(&d, &js); err != nil {
			return nil, fmt.Errorf("select device keys of %s: %w", userID, err)
		}
		out[d] = js
	}
	return out, rows.Err()
}

// deviceEd25519 returns the ed25519 key of a device keys object, or "".
func deviceEd25519(js, deviceID string) string {
	if js == "" {
		return ""
	}
	var f deviceKeysFields
	if json.Unmarshal([]byte(js), &f) != nil {
		return ""
	}
	return f.Keys["ed25519:"+deviceID]
}
