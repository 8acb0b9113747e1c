package userapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Token prefixes mark Haven's tokens, so that a leaked one is recognisable:
// access tokens and OpenID tokens.
const (
	tokenPrefix       = "hvt_"
	openIDTokenPrefix = "hvo_"
)

// newAccessToken returns a fresh access token and its hash.
func newAccessToken() (token, hash string, err error) { return newToken(tokenPrefix) }

// newToken returns a fresh token (the prefix and 32 bytes of crypto/rand)
// and its hash.
func newToken(prefix string) (token, hash string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("random token: %w", err)
	}
	token = prefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token), nil
}

// HashToken is what is stored of an access token: its SHA-256, in hex.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

type expiredOKKey struct{}

// AllowExpired marks a request that an expired access token may still make
// (logging out, as on Synapse): Authenticate then takes an expired token.
func AllowExpired(ctx context.Context) context.Context {
	return context.WithValue(ctx, expiredOKKey{}, true)
}

func expiredAllowed(ctx context.Context) bool {
	ok, _ := ctx.Value(expiredOKKey{}).(bool)
	return ok
}

type clientAddrKey struct{}

// WithClientAddr records the client's address in a request context, so
// that Authenticate can note it as the device's last-seen address.
func WithClientAddr(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, clientAddrKey{}, addr)
}

func clientAddrFrom(ctx context.Context) string {
	s, _ := ctx.Value(clientAddrKey{}).(string)
	return s
}

const selectDeviceByToken = `SELECT d.user_id, d.device_id, COALESCE(d.display_name, ''), a.is_admin, a.is_guest, a.deactivated,
COALESCE(d.token_expires_ts, 0), d.old_refresh_hash IS NOT NULL
FROM devices d JOIN accounts a ON a.user_id = d.user_id WHERE d.token_hash = $1`

// Authenticate resolves an access token to its device. It is served from
// memory once a token has been seen, so that an idle /sync costs no database
// query. An unknown token is 401 M_UNKNOWN_TOKEN with soft_logout false; an
// expired one (of a session with a refresh token) is M_UNKNOWN_TOKEN with
// soft_logout true: the client refreshes it. The first use of a token made
// by a refresh revokes the refresh token before (refresh.go).
func (s *Service) Authenticate(ctx context.Context, token string) (Device, error) {
	d, err := s.authenticate(ctx, token)
	if err != nil {
		return d, err
	}
	if d.ExpiresTS != 0 && s.now().UnixMilli() >= d.ExpiresTS && !expiredAllowed(ctx) {
		return Device{}, merr.UnknownToken(true, "Access token has expired")
	}
	if d.oldRefresh {
		if d, err = s.firstUse(ctx, d); err != nil {
			return Device{}, err
		}
	}
	return d, nil
}

func (s *Service) authenticate(ctx context.Context, token string) (Device, error) {
	if token == "" {
		return Device{}, merr.MissingToken("Missing access token")
	}
	h := HashToken(token)
	if d, ok := s.tokens.Get(h); ok {
		s.noteSeen(ctx, d)
		return d, nil
	}
	if _, ok := s.unknown.Peek(h); ok {
		return Device{}, merr.UnknownToken(false, "Unknown access token")
	}
	gen := s.tokGen.Load()
	var d Device
	var deactivated bool
	err := s.db.QueryRow(ctx, selectDeviceByToken, h).Scan(&d.UserID, &d.DeviceID, &d.DisplayName, &d.IsAdmin, &d.IsGuest, &deactivated, &d.ExpiresTS, &d.oldRefresh)
	if errors.Is(err, sql.ErrNoRows) {
		// A token cannot be known before it is made, so remembering that a
		// hash is unknown never hides a token issued later.
		s.unknown.Put(h, struct{}{})
		return Device{}, merr.UnknownToken(false, "Unknown access token")
	}
	if err != nil {
		return Device{}, fmt.Errorf("select device by token: %w", err)
	}
	if deactivated {
		return Device{}, merr.UnknownToken(false, "Unknown access token")
	}
	d.SessionID = h
	s.tokMu.Lock()
	// Cache only if no invalidation ran while we read: else the row we read
	// may already be gone.
	if s.tokGen.Load() == gen {
		s.tokens.Put(h, d)
	}
	s.tokMu.Unlock()
	s.noteSeen(ctx, d)
	return d, nil
}

// cacheToken puts a just-issued token in the cache.
func (s *Service) cacheToken(d Device) {
	s.tokMu.Lock()
	s.tokens.Put(d.SessionID, d)
	s.tokMu.Unlock()
}

// dropTokens removes token hashes from the cache.
func (s *Service) dropTokens(hashes []string) {
	s.tokMu.Lock()
	s.tokGen.Add(1)
	for _, h := range hashes {
		s.tokens.Remove(h)
	}
	s.tokMu.Unlock()
	s.seenMu.Lock()
	for _, h := range hashes {
		delete(s.seenWritten, h)
	}
	s.seenMu.Unlock()
}

// revokeTokens drops token hashes here and in every other process. Called
// after the transaction that deleted or replaced them has committed.
func (s *Service) revokeTokens(ctx context.Context, hashes []string) {
	if len(hashes) == 0 {
		return
	}
	s.dropTokens(hashes)
	s.broadcast(ctx, invalidation{TokenHashes: hashes})
}

// InvalidateUser drops every cached token of a user, for changes the cache
// holds (admin flag) that are made outside this service.
func (s *Service) InvalidateUser(ctx context.Context, userID string) error {
	rows, err := s.db.Query(ctx, `SELECT token_hash FROM devices WHERE user_id = $1`, userID)
	if err != nil {
		return fmt.Errorf("select tokens of %s: %w", userID, err)
	}
	hashes, err := scanStrings(rows)
	if err != nil {
		return fmt.Errorf("select tokens of %s: %w", userID, err)
	}
	s.revokeTokens(ctx, hashes)
	s.profiles.Remove(userID)
	return nil
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Last seen.

type deviceKey struct{ userID, deviceID string }

type seenUpdate struct {
	ts int64
	ip string
	ua string // the request's User-Agent, "" to keep the stored one
}

// seenMark is a session's last queued update: its time and User-Agent.
type seenMark struct {
	ts int64
	ua string
}

// noteSeen queues a last-seen update (time, address, User-Agent) if the
// device's last one is older than SeenInterval or the client now sends
// another User-Agent (an app updated). It never touches the database.
func (s *Service) noteSeen(ctx context.Context, d Device) {
	now := s.now().UnixMilli()
	ua := userAgentFrom(ctx)
	s.seenMu.Lock()
	last, ok := s.seenWritten[d.SessionID]
	if now-last.ts >= s.opts.SeenInterval.Milliseconds() || (ok && ua != "" && ua != last.ua) {
		s.seenWritten[d.SessionID] = seenMark{ts: now, ua: ua}
		s.seenPending[deviceKey{d.UserID, d.DeviceID}] = seenUpdate{ts: now, ip: clientAddrFrom(ctx), ua: ua}
	}
	s.seenMu.Unlock()
}

func (s *Service) seenLoop(log *logrus.Entry) {
	defer close(s.done)
	t := time.NewTicker(s.opts.SeenFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := s.FlushSeen(context.Background()); err != nil {
				log.WithError(err).Warn("cannot write devices' last-seen times")
			}
		case <-s.stop:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := s.FlushSeen(ctx); err != nil {
				log.WithError(err).Warn("cannot write devices' last-seen times")
			}
			cancel()
			return
		}
	}
}

// FlushSeen writes the queued last-seen updates in one transaction.
func (s *Service) FlushSeen(ctx context.Context) error {
	s.seenMu.Lock()
	// Entries older than the interval would queue an update anyway: drop
	// them so the map only holds recently active sessions.
	cutoff := s.now().UnixMilli() - s.opts.SeenInterval.Milliseconds()
	for h, m := range s.seenWritten {
		if m.ts < cutoff {
			delete(s.seenWritten, h)
		}
	}
	pending := s.seenPending
	if len(pending) == 0 {
		s.seenMu.Unlock()
		return nil
	}
	s.seenPending = make(map[deviceKey]seenUpdate)
	s.seenMu.Unlock()
	keys := make([]deviceKey, 0, len(pending))
	for k := range pending {
		keys = append(keys, k)
	}
	// One statement per 200 devices, whatever the number of active devices.
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		for len(keys) > 0 {
			n := min(len(keys), 200)
			var b strings.Builder
			args := make([]any, 0, 5*n)
			b.WriteString(`UPDATE devices SET last_seen_ts = v.column3,
last_seen_ip = CASE WHEN v.column4 = '' THEN devices.last_seen_ip ELSE v.column4 END,
user_agent = CASE WHEN v.column5 = '' THEN devices.user_agent ELSE v.column5 END FROM (VALUES `)
			for i, k := range keys[:n] {
				if i > 0 {
					b.WriteByte(',')
				}
				j := 5 * i
				fmt.Fprintf(&b, "(CAST($%d AS TEXT), CAST($%d AS TEXT), CAST($%d AS BIGINT), CAST($%d AS TEXT), CAST($%d AS TEXT))", j+1, j+2, j+3, j+4, j+5)
				u := pending[k]
				args = append(args, k.userID, k.deviceID, u.ts, u.ip, u.ua)
			}
			b.WriteString(`) AS v WHERE devices.user_id = v.column1 AND devices.device_id = v.column2`)
			if _, err := tx.Exec(ctx, b.String(), args...); err != nil {
				return fmt.Errorf("update last seen of %d devices: %w", n, err)
			}
			keys = keys[n:]
		}
		return nil
	})
}
