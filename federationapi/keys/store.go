package keys

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/storage"
)

// Fetcher asks a server for its keys (GET /_matrix/key/v2/server on the
// server itself). The federation client implements it. The answer is
// checked by the Store, not by the Fetcher.
type Fetcher interface {
	ServerKeys(ctx context.Context, server string) (gomatrixserverlib.ServerKeys, error)
}

const (
	// MaxKeyValidity is how far after its fetch a key is trusted at most,
	// whatever valid_until_ts its server published: the spec's rule for
	// room versions 5 and later ("the lesser of valid_until_ts and 7 days
	// into the future"). It also bounds how long a key stays cached.
	MaxKeyValidity = 7 * 24 * time.Hour
	// failureTTL is how long a failed fetch is remembered: lookups of that
	// server in the meantime fail at once instead of fetching again.
	failureTTL = time.Minute
	// refetchEvery is the shortest time between two fetches of one server,
	// so that signatures by key IDs a server never published cannot make
	// us fetch on every request.
	refetchEvery = 30 * time.Second
	// fetchTimeout bounds one fetch (which every waiting lookup shares).
	fetchTimeout = 30 * time.Second
	// cachedServers bounds the servers whose keys are held in memory.
	cachedServers = 10000
)

// Identity is this server: its name, the key it signs with and its earlier
// keys (listed under old_verify_keys).
type Identity struct {
	ServerName string
	Key        serverkey.Key
	OldKeys    []serverkey.Key
}

// LoadIdentity builds the Identity of a process that signs with active:
// the other keys of the database whose expired_ts is set become OldKeys.
func LoadIdentity(ctx context.Context, db *storage.DB, serverName string, active serverkey.Key) (Identity, error) {
	all, err := serverkey.All(ctx, db)
	if err != nil {
		return Identity{}, err
	}
	id := Identity{ServerName: serverName, Key: active}
	for _, k := range all {
		// A key made by a rotation after this process started is not
		// ours yet: it is published once the process restarts with it.
		if k.ID != active.ID && k.ExpiredTS != 0 {
			id.OldKeys = append(id.OldKeys, k)
		}
	}
	return id, nil
}

// Store holds other servers' signing keys: in memory, in the database
// (tables remote_server_keys and remote_server_key_responses) and, when
// neither has what a check needs, fetched from the server itself. It is a
// gomatrixserverlib.JSONVerifier.
//
// Lock order: mu, then the caches' own locks.
type Store struct {
	db      *storage.DB
	self    Identity
	fetcher Fetcher
	now     func() time.Time

	servers  *lru.Cache[string, *remote]
	attempts *lru.Cache[string, attempt]

	mu      sync.Mutex
	flights map[string]*flight
}

// remote is what we know of one server. It is never changed once cached:
// a fetch replaces it.
type remote struct {
	keys map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult
	// response is its latest signed answer (nil if none), as received.
	response []byte
	// responseUntil is the valid_until_ts of response, as published.
	responseUntil spec.Timestamp
}

type attempt struct {
	at  time.Time
	err error
}

type flight struct {
	done chan struct{}
	err  error
}

// StoreConfig configures a Store.
type StoreConfig struct {
	Self    Identity
	Fetcher Fetcher
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// NewStore makes the key store.
func NewStore(db *storage.DB, cfg StoreConfig) *Store {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Store{
		db: db, self: cfg.Self, fetcher: cfg.Fetcher, now: now,
		servers:  lru.New[string, *remote]("federation_server_keys", cachedServers),
		attempts: lru.New[string, attempt]("federation_key_fetches", cachedServers),
		flights:  make(map[string]*flight),
	}
}

var _ gomatrixserverlib.JSONVerifier = (*Store)(nil)

// VerifyJSONs checks each message's signature by its server (a message
// passes with one good signature by a key that was valid at AtTS) and
// fetches the keys it lacks. A nil ValidityCheckingFunc means
// gomatrixserverlib.StrictValiditySignatureCheck. The error is only for a
// failing database; a key that cannot be had fails that message alone.
func (s *Store) VerifyJSONs(ctx context.Context, requests []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	results := make([]gomatrixserverlib.VerifyJSONResult, len(requests))
	keyIDs := make([][]gomatrixserverlib.KeyID, len(requests))
	for i, req := range requests {
		ids, err := gomatrixserverlib.ListKeyIDs(string(req.ServerName), req.Message)
		if err != nil {
			results[i].Error = fmt.Errorf("read signatures: %w", err)
			continue
		}
		for _, id := range ids {
			if strings.HasPrefix(string(id), "ed25519:") {
				keyIDs[i] = append(keyIDs[i], id)
			}
		}
		if len(keyIDs[i]) == 0 {
			results[i].Error = fmt.Errorf("not signed by %s with an ed25519 key", req.ServerName)
		}
	}
	// One fetch per server, whatever the number of messages it signed.
	fetched := map[spec.ServerName]error{}
	for i, req := range requests {
		if results[i].Error != nil {
			continue
		}
		r, err := s.known(ctx, req.ServerName)
		if err != nil {
			return nil, err
		}
		if fetchErr, done := fetched[req.ServerName]; !done && needFetch(r, keyIDs[i], req, s.now()) {
			fetchErr = s.refresh(ctx, string(req.ServerName))
			fetched[req.ServerName] = fetchErr
			if fetchErr != nil {
				logging.From(ctx).WithError(fetchErr).WithField("server", req.ServerName).Warn("fetching server keys failed")
			}
			if r, err = s.known(ctx, req.ServerName); err != nil {
				return nil, err
			}
		}
		results[i].Error = check(r, keyIDs[i], req, fetched[req.ServerName])
	}
	return results, nil
}

// needFetch tells whether the server's keys could answer the request
// better after a fetch: a signing key is unknown, or none of them is
// valid at AtTS and a current one has passed its validity.
func needFetch(r *remote, ids []gomatrixserverlib.KeyID, req gomatrixserverlib.VerifyJSONRequest, now time.Time) bool {
	stale := false
	for _, id := range ids {
		k, ok := r.keys[id]
		if !ok {
			return true
		}
		if k.WasValidAt(req.AtTS, validity(req)) {
			return false
		}
		if k.ExpiredTS == gomatrixserverlib.PublicKeyNotExpired && k.ValidUntilTS <= spec.AsTimestamp(now) {
			stale = true
		}
	}
	return stale
}

func validity(req gomatrixserverlib.VerifyJSONRequest) gomatrixserverlib.SignatureValidityCheckFunc {
	if req.ValidityCheckingFunc != nil {
		return req.ValidityCheckingFunc
	}
	return gomatrixserverlib.StrictValiditySignatureCheck
}

func check(r *remote, ids []gomatrixserverlib.KeyID, req gomatrixserverlib.VerifyJSONRequest, fetchErr error) error {
	var last error
	for _, id := range ids {
		k, ok := r.keys[id]
		if !ok {
			continue
		}
		if !k.WasValidAt(req.AtTS, validity(req)) {
			last = fmt.Errorf("key %s of %s was not valid at %d", id, req.ServerName, req.AtTS)
			continue
		}
		if err := gomatrixserverlib.VerifyJSON(string(req.ServerName), id, ed25519.PublicKey(k.Key), req.Message); err != nil {
			last = err
			continue
		}
		return nil
	}
	if last != nil {
		return last
	}
	if fetchErr != nil {
		return fmt.Errorf("no key of %s to check the signature with: %w", req.ServerName, fetchErr)
	}
	return fmt.Errorf("no key of %s to check the signature with", req.ServerName)
}

// Keys returns the keys of server that were valid at atTS, fetching them
// if none is known to be. The map is the caller's.
func (s *Store) Keys(ctx context.Context, server string, atTS spec.Timestamp) (map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult, error) {
	valid := func(r *remote) map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult {
		out := map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult{}
		for id, k := range r.keys {
			if k.WasValidAt(atTS, gomatrixserverlib.StrictValiditySignatureCheck) {
				out[id] = k
			}
		}
		return out
	}
	r, err := s.known(ctx, spec.ServerName(server))
	if err != nil {
		return nil, err
	}
	if out := valid(r); len(out) > 0 || spec.ServerName(server) == spec.ServerName(s.self.ServerName) {
		return out, nil
	}
	if err := s.refresh(ctx, server); err != nil {
		return nil, err
	}
	if r, err = s.known(ctx, spec.ServerName(server)); err != nil {
		return nil, err
	}
	return valid(r), nil
}

// known returns what memory or the database knows of server's keys.
func (s *Store) known(ctx context.Context, server spec.ServerName) (*remote, error) {
	if server == spec.ServerName(s.self.ServerName) {
		return s.selfKeys(), nil
	}
	if r, ok := s.servers.Get(string(server)); ok {
		return r, nil
	}
	r, err := s.load(ctx, string(server))
	if err != nil {
		return nil, err
	}
	// A fetch that finished while we read must not be undone by what we
	// read before it.
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.servers.Peek(string(server)); ok {
		return cur, nil
	}
	s.servers.Put(string(server), r)
	return r, nil
}

func (s *Store) selfKeys() *remote {
	r := &remote{keys: map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult{}}
	if s.self.Key.Private != nil {
		r.keys[s.self.Key.ID] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(s.self.Key.PublicKey())},
			ValidUntilTS: spec.AsTimestamp(s.now().Add(MaxKeyValidity)),
		}
	}
	for _, k := range s.self.OldKeys {
		if k.ID == s.self.Key.ID || k.ExpiredTS == 0 {
			continue
		}
		r.keys[k.ID] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(k.PublicKey())},
			ExpiredTS: spec.Timestamp(k.ExpiredTS),
		}
	}
	return r
}

const (
	selectRemoteKeys = `SELECT key_id, public_key, valid_until_ts, expired_ts FROM remote_server_keys WHERE server_name = $1`
	selectResponse   = `SELECT response, valid_until_ts FROM remote_server_key_responses WHERE server_name = $1`
	// A key's validity only grows: an answer that publishes a shorter one
	// does not undo what an earlier answer vouched for.
	upsertRemoteKey = `INSERT INTO remote_server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key,
	valid_until_ts = CASE WHEN excluded.valid_until_ts > remote_server_keys.valid_until_ts THEN excluded.valid_until_ts ELSE remote_server_keys.valid_until_ts END,
	expired_ts = excluded.expired_ts, fetched_ts = excluded.fetched_ts`
	upsertResponse = `INSERT INTO remote_server_key_responses (server_name, response, valid_until_ts, fetched_ts) VALUES ($1, $2, $3, $4)
ON CONFLICT (server_name) DO UPDATE SET response = excluded.response, valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts`
)

func (s *Store) load(ctx context.Context, server string) (*remote, error) {
	r := &remote{keys: map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult{}}
	if !storage.StorableText(server) {
		return r, nil
	}
	rows, err := s.db.Query(ctx, selectRemoteKeys, server)
	if err != nil {
		return nil, fmt.Errorf("read keys of %s: %w", server, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, pub string
		var until, expired int64
		if err := rows.Scan(&id, &pub, &until, &expired); err != nil {
			return nil, fmt.Errorf("read keys of %s: %w", server, err)
		}
		raw, err := base64.RawStdEncoding.DecodeString(pub)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			continue
		}
		r.keys[gomatrixserverlib.KeyID(id)] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: raw},
			ValidUntilTS: spec.Timestamp(until),
			ExpiredTS:    spec.Timestamp(expired),
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read keys of %s: %w", server, err)
	}
	var resp string
	var until int64
	err = s.db.QueryRow(ctx, selectResponse, server).Scan(&resp, &until)
	switch {
	case err == nil:
		r.response, r.responseUntil = []byte(resp), spec.Timestamp(until)
	case !errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("read key response of %s: %w", server, err)
	}
	return r, nil
}

// refresh fetches server's keys unless a fetch is under way (it waits for
// that one), failed less than failureTTL ago (its error is returned) or
// succeeded less than refetchEvery ago (nothing to do).
func (s *Store) refresh(ctx context.Context, server string) error {
	if server == s.self.ServerName {
		return nil
	}
	s.mu.Lock()
	f := s.flights[server]
	if f == nil {
		if a, ok := s.attempts.Get(server); ok {
			since := s.now().Sub(a.at)
			if a.err != nil && since < failureTTL {
				s.mu.Unlock()
				return fmt.Errorf("keys of %s (failed %s ago): %w", server, since.Round(time.Second), a.err)
			}
			if a.err == nil && since < refetchEvery {
				s.mu.Unlock()
				return nil
			}
		}
		f = &flight{done: make(chan struct{}), err: errors.New("key fetch did not finish")}
		s.flights[server] = f
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.flights, server)
			s.attempts.Put(server, attempt{at: s.now(), err: f.err})
			s.mu.Unlock()
			close(f.done)
		}()
		// The fetch serves every lookup waiting for it: it outlives the
		// caller that started it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		defer cancel()
		f.err = s.fetch(fctx, server)
		return f.err
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetch asks server for its keys, checks them and stores them.
func (s *Store) fetch(ctx context.Context, server string) error {
	if s.fetcher == nil {
		return errors.New("no way to fetch keys from other servers")
	}
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(server)); !ok || !storage.StorableText(server) {
		return fmt.Errorf("%q is not a server name", server)
	}
	keys, err := s.fetcher.ServerKeys(ctx, server)
	if err != nil {
		return fmt.Errorf("fetch keys of %s: %w", server, err)
	}
	now := s.now()
	if err := checkResponse(server, keys, now); err != nil {
		return err
	}
	if !storage.StorableText(string(keys.Raw)) {
		return fmt.Errorf("keys of %s: the answer is not valid UTF-8 text", server)
	}
	fetched := now.UnixMilli()
	capped := min(int64(keys.ValidUntilTS), now.Add(MaxKeyValidity).UnixMilli())
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		for id, k := range keys.VerifyKeys {
			if _, err := tx.Exec(ctx, upsertRemoteKey, server, string(id), base64.RawStdEncoding.EncodeToString(k.Key), capped, 0, fetched); err != nil {
				return err
			}
		}
		for id, k := range keys.OldVerifyKeys {
			if _, ok := keys.VerifyKeys[id]; ok || !usableKey(id, k.Key) || k.ExpiredTS == 0 {
				continue
			}
			if _, err := tx.Exec(ctx, upsertRemoteKey, server, string(id), base64.RawStdEncoding.EncodeToString(k.Key), 0, int64(k.ExpiredTS), fetched); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, upsertResponse, server, string(keys.Raw), int64(keys.ValidUntilTS), fetched)
		return err
	})
	if err != nil {
		return fmt.Errorf("store keys of %s: %w", server, err)
	}
	r, err := s.load(ctx, server)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.servers.Put(server, r)
	s.mu.Unlock()
	logging.From(ctx).WithFields(logrus.Fields{"server": server, "keys": len(keys.VerifyKeys), "valid_until_ts": int64(keys.ValidUntilTS)}).Debug("fetched server keys")
	return nil
}

// checkResponse applies the spec's checks to a server's own answer: it
// is for the server asked, still valid, its keys are ed25519 and every
// current key signed it.
func checkResponse(server string, keys gomatrixserverlib.ServerKeys, now time.Time) error {
	checks, _ := gomatrixserverlib.CheckKeys(spec.ServerName(server), now, keys)
	switch {
	case !checks.MatchingServerName:
		return fmt.Errorf("keys of %s: the answer is for server_name %q", server, keys.ServerName)
	case !checks.FutureValidUntilTS:
		return fmt.Errorf("keys of %s: the answer expired at %d", server, keys.ValidUntilTS)
	case !checks.HasEd25519Key:
		return fmt.Errorf("keys of %s: the answer lists no ed25519 key", server)
	case !checks.AllChecksOK:
		return fmt.Errorf("keys of %s: the answer is not signed by every key it lists", server)
	}
	for id, k := range keys.VerifyKeys {
		if !usableKey(id, k.Key) {
			return fmt.Errorf("keys of %s: key %q is not an ed25519 key we can store", server, id)
		}
	}
	return nil
}

func usableKey(id gomatrixserverlib.KeyID, key spec.Base64Bytes) bool {
	return strings.HasPrefix(string(id), "ed25519:") && len(key) == ed25519.PublicKeySize && storage.StorableText(string(id))
}

// response returns server's latest signed answer, refreshing it first if
// it is older than minValid or lacks one of ids. ok is false when there is
// none at all.
func (s *Store) response(ctx context.Context, server string, ids []gomatrixserverlib.KeyID, minValid spec.Timestamp) (raw []byte, ok bool, err error) {
	r, err := s.known(ctx, spec.ServerName(server))
	if err != nil {
		return nil, false, err
	}
	fresh := r.response != nil && r.responseUntil >= minValid
	if fresh {
		var parsed gomatrixserverlib.ServerKeys
		if err := parsed.UnmarshalJSON(r.response); err != nil {
			fresh = false
		}
		for _, id := range ids {
			_, cur := parsed.VerifyKeys[id]
			_, old := parsed.OldVerifyKeys[id]
			if !cur && !old {
				fresh = false
			}
		}
	}
	if !fresh {
		if err := s.refresh(ctx, server); err != nil {
			logging.From(ctx).WithError(err).WithField("server", server).Info("notary: fetching server keys failed; answering from the cache")
		}
		if r, err = s.known(ctx, spec.ServerName(server)); err != nil {
			return nil, false, err
		}
	}
	return r.response, r.response != nil, nil
}
