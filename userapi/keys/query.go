package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Cross-signing key types.
const (
	KeyMaster      = "master"
	KeySelfSigning = "self_signing"
	KeyUserSigning = "user_signing"
)

// QueryResponse is the answer of /keys/query.
type QueryResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
	Failures        map[string]json.RawMessage            `json:"failures"`
}

// ClaimResponse is the answer of /keys/claim.
type ClaimResponse struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	Failures    map[string]json.RawMessage                       `json:"failures"`
}

// remoteFailure is what failures says of a server whose users are asked
// about: Haven does not ask other servers for keys.
var remoteFailure = json.RawMessage(`{"status":503,"message":"This server does not ask other servers for keys"}`)

// serverOf returns the server name part of a user ID, or "" when it is not one.
func serverOf(userID string) string { return ids.ServerOf(userID, '@') }

// CheckUserID validates a user ID given in a key request.
func CheckUserID(userID string) error {
	if serverOf(userID) == "" || len(userID) > 255 || !storage.StorableText(userID) {
		return merr.InvalidParam("%q is not a user ID", userID)
	}
	return nil
}

// sigRow is one stored signature.
type sigRow struct {
	targetUser, targetKey, signerUser, signerKey, sig string
}

// signaturesOf loads the stored signatures on keys of the given users that
// the viewer may see: those made by the key's own user and by the viewer.
func signaturesOf(ctx context.Context, q storage.Querier, users []string, viewer string) (map[[2]string][]sigRow, error) {
	out := map[[2]string][]sigRow{}
	if len(users) == 0 {
		return out, nil
	}
	rows, err := q.Query(ctx, `SELECT target_user, target_key, signer_user, signer_key, signature FROM key_signatures
WHERE target_user IN ($1) AND (signer_user = target_user OR signer_user = $2)`, users, viewer)
	if err != nil {
		return nil, fmt.Errorf("select signatures: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r sigRow
		if err := rows.Scan(&r.targetUser, &r.targetKey, &r.signerUser, &r.signerKey, &r.sig); err != nil {
			return nil, fmt.Errorf("select signatures: %w", err)
		}
		k := [2]string{r.targetUser, r.targetKey}
		out[k] = append(out[k], r)
	}
	return out, rows.Err()
}

// withSignatures merges stored signatures into a key object. unsigned, when
// not nil, becomes the object's "unsigned".
func withSignatures(stored string, sigs []sigRow, unsigned map[string]any) json.RawMessage {
	if len(sigs) == 0 && unsigned == nil {
		return json.RawMessage(stored)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(stored), &obj); err != nil {
		return json.RawMessage(stored)
	}
	if len(sigs) > 0 {
		all := map[string]map[string]string{}
		if raw, ok := obj["signatures"]; ok {
			_ = json.Unmarshal(raw, &all)
		}
		for _, s := range sigs {
			if all[s.signerUser] == nil {
				all[s.signerUser] = map[string]string{}
			}
			all[s.signerUser][s.signerKey] = s.sig
		}
		obj["signatures"], _ = json.Marshal(all)
	}
	if unsigned != nil {
		obj["unsigned"], _ = json.Marshal(unsigned)
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return json.RawMessage(stored)
	}
	return out
}

// Query answers /keys/query for requester: the devices (all, or those
// listed) of each local user with their signatures and display names, and
// their cross-signing keys (the user-signing key only of the requester's own
// user). A local user without keys (or unknown) gets an empty device map;
// remote servers go in failures.
func (s *Service) Query(ctx context.Context, requester string, want map[string][]string) (*QueryResponse, error) {
	resp := &QueryResponse{
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
		Failures:        map[string]json.RawMessage{},
	}
	var local []string
	for u := range want {
		if err := CheckUserID(u); err != nil {
			return nil, err
		}
		if server := serverOf(u); server != s.opts.ServerName {
			resp.Failures[server] = remoteFailure
			continue
		}
		local = append(local, u)
		// Every local user asked about is answered, with no devices if
		// need be: clients (matrix-rust-sdk) treat a user missing from the
		// answer as not yet queried and ask again.
		resp.DeviceKeys[u] = map[string]json.RawMessage{}
	}
	sort.Strings(local)
	for start := 0; start < len(local); start += 500 {
		if err := s.queryLocal(ctx, requester, local[start:min(start+500, len(local))], want, resp); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

func (s *Service) queryLocal(ctx context.Context, requester string, users []string, want map[string][]string, resp *QueryResponse) error {
	sigs, err := signaturesOf(ctx, s.db, users, requester)
	if err != nil {
		return err
	}
	rows, err := s.db.Query(ctx, `SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM device_keys k
JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id WHERE k.user_id IN ($1)`, users)
	if err != nil {
		return fmt.Errorf("select device keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u, d, js string
		var name sql.NullString
		if err := rows.Scan(&u, &d, &js, &name); err != nil {
			return fmt.Errorf("select device keys: %w", err)
		}
		if only := want[u]; len(only) > 0 && !contains(only, d) {
			continue
		}
		unsigned := map[string]any{}
		if name.Valid {
			unsigned["device_display_name"] = name.String
		}
		resp.DeviceKeys[u][d] = withSignatures(js, sigs[[2]string{u, d}], unsigned)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("select device keys: %w", err)
	}
	rows.Close()
	csk, err := crossSigningKeysOf(ctx, s.db, users)
	if err != nil {
		return err
	}
	for u, byType := range csk {
		if js, ok := byType[KeyMaster]; ok {
			resp.MasterKeys[u] = withSignatures(js, sigs[[2]string{u, firstKey(js)}], nil)
		}
		if js, ok := byType[KeySelfSigning]; ok {
			resp.SelfSigningKeys[u] = json.RawMessage(js)
		}
		if js, ok := byType[KeyUserSigning]; ok && u == requester {
			resp.UserSigningKeys[u] = json.RawMessage(js)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// crossSigningKeysOf loads the users' cross-signing keys: user → type → JSON.
func crossSigningKeysOf(ctx context.Context, q storage.Querier, users []string) (map[string]map[string]string, error) {
	rows, err := q.Query(ctx, `SELECT user_id, key_type, key_json FROM cross_signing_keys WHERE user_id IN ($1)`, users)
	if err != nil {
		return nil, fmt.Errorf("select cross-signing keys: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]string{}
	for rows.Next() {
		var u, t, js string
		if err := rows.Scan(&u, &t, &js); err != nil {
			return nil, fmt.Errorf("select cross-signing keys: %w", err)
		}
		if out[u] == nil {
			out[u] = map[string]string{}
		}
		out[u][t] = js
	}
	return out, rows.Err()
}

// firstKey returns the public key of a cross-signing key object (its one
// "keys" entry), or "".
func firstKey(js string) string {
	var f struct {
		Keys map[string]string `json:"keys"`
	}
	if json.Unmarshal([]byte(js), &f) != nil {
		return ""
	}
	for _, v := range f.Keys {
		return v
	}
	return ""
}

// Claim hands out, for each requested device, one one-time key of the
// algorithm, else the device's fallback key of it. A one-time key is
// deleted in the transaction that hands it out, so it is never handed out
// twice; the fallback key is marked used and stays claimable. Devices
// without keys are left out; remote servers go in failures.
func (s *Service) Claim(ctx context.Context, want map[string]map[string]string) (*ClaimResponse, error) {
	resp := &ClaimResponse{OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}, Failures: map[string]json.RawMessage{}}
	type target struct{ user, device, alg string }
	var targets []target
	for u, devs := range want {
		if err := CheckUserID(u); err != nil {
			return nil, err
		}
		if server := serverOf(u); server != s.opts.ServerName {
			resp.Failures[server] = remoteFailure
			continue
		}
		for d, alg := range devs {
			if alg == "" || len(alg) > MaxKeyIDBytes || strings.Contains(alg, ":") || !storage.StorableText(alg) {
				return nil, merr.InvalidParam("%q is not a key algorithm", alg)
			}
			if !storage.StorableText(d) {
				return nil, merr.InvalidParam("%q is not a device ID", d)
			}
			targets = append(targets, target{u, d, alg})
		}
	}
	if len(targets) == 0 {
		return resp, nil
	}
	sort.Slice(targets, func(i, j int) bool {
		a, b := targets[i], targets[j]
		if a.user != b.user {
			return a.user < b.user
		}
		return a.device < b.device
	})
	type claimed struct {
		target
		keyID, js string
		otk       bool
	}
	var got []claimed
	// Claims of different devices are independent: a few devices per write
	// transaction, so that a request for thousands of devices does not hold
	// the database writer for long. If a later batch fails, the keys of the
	// earlier ones (already deleted) are still answered.
	for start := 0; start < len(targets); start += claimBatch {
		batch := targets[start:min(start+claimBatch, len(targets))]
		var part []claimed
		err := s.db.Write(ctx, func(tx *storage.Tx) error {
			part = part[:0]
			for _, t := range batch {
				id, js, ok, err := claimOneTimeKey(ctx, tx, t.user, t.device, t.alg)
				if err != nil {
					return err
				}
				if ok {
					part = append(part, claimed{t, id, js, true})
					continue
				}
				err = tx.QueryRow(ctx, `UPDATE fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
AND EXISTS (SELECT 1 FROM devices d WHERE d.user_id = $1 AND d.device_id = $2) RETURNING key_id, key_json`, t.user, t.device, t.alg).Scan(&id, &js)
				if errors.Is(err, sql.ErrNoRows) {
					continue
				}
				if err != nil {
					return fmt.Errorf("claim fallback key of %s %s: %w", t.user, t.device, err)
				}
				part = append(part, claimed{t, id, js, false})
			}
			return nil
		})
		if err != nil {
			if len(got) == 0 {
				return nil, err
			}
			logging.From(ctx).WithError(err).WithField("claimed", len(got)).Error("keys: claim stopped; answering the keys claimed so far")
			break
		}
		got = append(got, part...)
	}
	for _, c := range got {
		if resp.OneTimeKeys[c.user] == nil {
			resp.OneTimeKeys[c.user] = map[string]map[string]json.RawMessage{}
		}
		resp.OneTimeKeys[c.user][c.device] = map[string]json.RawMessage{c.keyID: json.RawMessage(c.js)}
		s.countsChanged(ctx, c.user, c.device)
	}
	return resp, nil
}

// claimBatch is how many devices' keys one write transaction claims.
const claimBatch = 100

// claimOneTimeKey deletes and returns one one-time key of the device. When
// a concurrent claim (PostgreSQL) took the key this statement chose, it
// tries again with the keys left.
func claimOneTimeKey(ctx context.Context, tx *storage.Tx, userID, deviceID, alg string) (id, js string, ok bool, err error) {
	q := claimOTK
	if tx.Dialect() == storage.Postgres {
		q = claimOTKPostgres
	}
	for attempt := 0; attempt < 20; attempt++ {
		err = tx.QueryRow(ctx, q, userID, deviceID, alg).Scan(&id, &js)
		if err == nil {
			return id, js, true, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return "", "", false, fmt.Errorf("claim one-time key of %s %s: %w", userID, deviceID, err)
		}
		var left int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`,
			userID, deviceID, alg).Scan(&left); err != nil {
			return "", "", false, fmt.Errorf("count one-time keys of %s %s: %w", userID, deviceID, err)
		}
		if left == 0 {
			return "", "", false, nil
		}
	}
	return "", "", false, nil
}

// claimOTK deletes and returns a device's oldest one-time key (the first
// uploaded; within an upload, the lowest key ID). SQLite has
// one writer, so nothing races it. On PostgreSQL, concurrent claims would
// all pick the same oldest key and all but one would find it gone: there
// the pick skips the keys that other claims hold locked (the engines'
// one difference here: one text, with the lock clause added for it).
const (
	claimOTKPick = `DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id =
(SELECT o.key_id FROM one_time_keys o WHERE o.user_id = $1 AND o.device_id = $2 AND o.algorithm = $3
AND EXISTS (SELECT 1 FROM devices d WHERE d.user_id = $1 AND d.device_id = $2) ORDER BY o.upload_seq, o.key_id LIMIT 1`
	claimOTKReturn = `)
RETURNING key_id, key_json`
	claimOTK         = claimOTKPick + claimOTKReturn
	claimOTKPostgres = claimOTKPick + ` FOR UPDATE SKIP LOCKED` + claimOTKReturn
)
