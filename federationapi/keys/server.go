package keys

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
)

const (
	// OwnKeysValidity is how long other servers may cache our keys
	// (valid_until_ts of our answer): long enough that they rarely ask,
	// short enough that a rotation reaches them within a day.
	OwnKeysValidity = 24 * time.Hour
	// maxQueryServers bounds the servers of one notary query.
	maxQueryServers = 100
	// queryFetches bounds the fetches one notary query runs at once.
	queryFetches = 8
	// maxQueryBytes bounds a notary query's body.
	maxQueryBytes = 64 << 10
)

// Server serves our key server (/_matrix/key/v2/server) and the notary
// (/_matrix/key/v2/query). Neither needs authentication.
type Server struct {
	self     Identity
	store    *Store
	allowed  func(server string) bool
	validFor time.Duration
	now      func() time.Time

	mu      sync.Mutex
	own     []byte
	ownUpTo time.Time // own is reused until then
}

// ServerConfig configures a Server.
type ServerConfig struct {
	Self  Identity
	Store *Store
	// Allowed tells which servers the notary answers for (nil: every
	// server). Keys of other servers are neither fetched nor served.
	Allowed func(server string) bool
	// ValidFor is the validity of our published keys (OwnKeysValidity if 0).
	ValidFor time.Duration
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// NewServer makes the key endpoints.
func NewServer(cfg ServerConfig) *Server {
	s := &Server{self: cfg.Self, store: cfg.Store, allowed: cfg.Allowed, validFor: cfg.ValidFor, now: cfg.Now}
	if s.validFor <= 0 {
		s.validFor = OwnKeysValidity
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.allowed == nil {
		s.allowed = func(string) bool { return true }
	}
	return s
}

// Routes mounts the key endpoints on r.
func (s *Server) Routes(r chi.Router) {
	r.Get("/_matrix/key/v2/server", httpx.Handle(s.serverKeys))
	// The key ID form is deprecated; it answers the same.
	r.Get("/_matrix/key/v2/server/{keyID}", httpx.Handle(s.serverKeys))
	r.Post("/_matrix/key/v2/query", httpx.Handle(s.queryBatch))
	r.Get("/_matrix/key/v2/query/{serverName}", httpx.Handle(s.queryOne))
}

func (s *Server) serverKeys(w http.ResponseWriter, r *http.Request) error {
	body, err := s.OwnKeys()
	if err != nil {
		return err
	}
	return httpx.RawJSON(w, http.StatusOK, body)
}

// OwnKeys returns our signed key server answer. It is built again when a
// fraction of its validity has passed, so that its valid_until_ts always
// lies well ahead.
func (s *Server) OwnKeys() ([]byte, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.own != nil && now.Before(s.ownUpTo) {
		return s.own, nil
	}
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName:    spec.ServerName(s.self.ServerName),
		ValidUntilTS:  spec.AsTimestamp(now.Add(s.validFor)),
		VerifyKeys:    map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{},
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
	}
	fields.VerifyKeys[s.self.Key.ID] = gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(s.self.Key.PublicKey())}
	for _, k := range s.self.OldKeys {
		if k.ID == s.self.Key.ID || k.ExpiredTS == 0 {
			continue
		}
		fields.OldVerifyKeys[k.ID] = gomatrixserverlib.OldVerifyKey{
			VerifyKey: gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(k.PublicKey())},
			ExpiredTS: spec.Timestamp(k.ExpiredTS),
		}
	}
	unsigned, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	signed, err := gomatrixserverlib.SignJSON(s.self.ServerName, s.self.Key.ID, s.self.Key.Private, unsigned)
	if err != nil {
		return nil, err
	}
	s.own, s.ownUpTo = signed, now.Add(min(time.Hour, s.validFor/4))
	return signed, nil
}

type queryCriteria struct {
	MinimumValidUntilTS *int64 `json:"minimum_valid_until_ts"`
}

type queryRequest struct {
	ServerKeys map[string]map[string]queryCriteria `json:"server_keys"`
}

func (s *Server) queryBatch(w http.ResponseWriter, r *http.Request) error {
	var req queryRequest
	if err := httpx.DecodeJSON(r, &req, maxQueryBytes); err != nil {
		return err
	}
	if req.ServerKeys == nil {
		return merr.BadJSON("server_keys is required")
	}
	if len(req.ServerKeys) > maxQueryServers {
		return merr.BadJSON("At most %d servers per query", maxQueryServers)
	}
	now := spec.AsTimestamp(s.now())
	var qs []serverQuery
	for server, ids := range req.ServerKeys {
		q := serverQuery{server: server, minValid: now}
		if len(ids) > 0 {
			q.minValid = 0
		}
		for id, c := range ids {
			q.ids = append(q.ids, gomatrixserverlib.KeyID(id))
			ts := now
			if c.MinimumValidUntilTS != nil {
				ts = spec.Timestamp(max(*c.MinimumValidUntilTS, 0))
			}
			q.minValid = max(q.minValid, ts)
		}
		qs = append(qs, q)
	}
	return s.answer(w, r, qs)
}

func (s *Server) queryOne(w http.ResponseWriter, r *http.Request) error {
	server := chi.URLParam(r, "serverName")
	if v, err := url.PathUnescape(server); err == nil {
		server = v
	}
	q := serverQuery{server: server, minValid: spec.AsTimestamp(s.now())}
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		ts, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ts < 0 {
			return merr.InvalidParam("minimum_valid_until_ts must be a timestamp in milliseconds")
		}
		q.minValid = spec.Timestamp(ts)
	}
	return s.answer(w, r, []serverQuery{q})
}

type serverQuery struct {
	server   string
	ids      []gomatrixserverlib.KeyID
	minValid spec.Timestamp
}

// answer writes the notary's answer: for each server asked (and allowed),
// its latest signed key answer with our signature added. A server that
// cannot be reached and has nothing cached is left out.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, qs []serverQuery) error {
	sort.Slice(qs, func(i, j int) bool { return qs[i].server < qs[j].server })
	out := make([]json.RawMessage, len(qs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, queryFetches)
	var dbErr error
	var errMu sync.Mutex
	for i, q := range qs {
		if q.server == s.self.ServerName {
			own, err := s.OwnKeys()
			if err != nil {
				return err
			}
			out[i] = own
			continue
		}
		if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(q.server)); !ok || !s.allowed(q.server) {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			raw, ok, err := s.store.response(r.Context(), q.server, q.ids, q.minValid)
			if err != nil {
				errMu.Lock()
				dbErr = err
				errMu.Unlock()
				return
			}
			if !ok {
				return
			}
			signed, err := gomatrixserverlib.SignJSON(s.self.ServerName, s.self.Key.ID, s.self.Key.Private, raw)
			if err != nil {
				logging.From(r.Context()).WithError(err).WithField("server", q.server).Warn("notary: stored key answer does not sign")
				return
			}
			out[i] = signed
		}()
	}
	wg.Wait()
	if dbErr != nil {
		return dbErr
	}
	list := make([]json.RawMessage, 0, len(out))
	for _, raw := range out {
		if raw != nil {
			list = append(list, raw)
		}
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"server_keys": list})
}
