package keys

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// ToDeviceQueue queues m.direct_to_device EDUs for other servers (the
// federation's outbound queues). QueueToDevice returns once the EDU is
// stored durably; content is the EDU's content, messageID its message_id.
type ToDeviceQueue interface {
	QueueToDevice(ctx context.Context, server, messageID string, content json.RawMessage) error
}

// ErrServerNotAllowed is what a ToDeviceQueue answers for a server that
// federation may not reach (not in the allowlist): its users' messages are
// dropped, as without federation, and the send goes on.
var ErrServerNotAllowed = errors.New("federation with the server is not allowed")

// KeyClaimer asks another server for its users' one-time keys
// (/_matrix/federation/v1/user/keys/claim). An error that is a Matrix
// error (merr) carries the status the other server answered.
type KeyClaimer interface {
	ClaimKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// Limits of to-device messages and key claims across servers.
const (
	// ToDeviceEDUBytes is the size above which the messages of a send to
	// one server are split into several EDUs (each with at least one
	// message): transactions stay within what every server takes.
	ToDeviceEDUBytes = 64 << 10
	// InboundToDeviceRetention is how long the message IDs of delivered
	// m.direct_to_device EDUs are remembered. An origin that sends a
	// transaction again does so within its retry backoff (an hour at
	// most between attempts), far within it; the sender's own
	// transaction IDs are remembered 24 hours (ToDeviceTxnLifetime).
	InboundToDeviceRetention = 7 * 24 * time.Hour
	// MaxMessageIDBytes bounds an inbound EDU's message_id (the spec's 32
	// code points, with room for senders that exceed it).
	MaxMessageIDBytes = 255
	// DefaultClaimTimeout is how long a /keys/claim waits for other
	// servers when the request names no timeout; MaxClaimTimeout and
	// MinClaimTimeout bound the one it names.
	DefaultClaimTimeout = 10 * time.Second
	MaxClaimTimeout     = 60 * time.Second
	MinClaimTimeout     = 100 * time.Millisecond
	// claimServersAtOnce is how many servers one claim asks at the same time.
	claimServersAtOnce = 16
)

// errNoFederation is what failures says of a server when this server does
// not federate.
var errNoFederation = merr.Unavailable("This server does not federate")

// toDeviceMessageID derives the message_id of a send's EDUs from the
// sending device (and when it was created: a device made again under the
// same ID starts its transaction IDs afresh) and the transaction ID, so
// that a retried send gets the same IDs and the other server delivers it
// once. 22 characters; a chunk adds ".<n>" (the spec allows 32).
func toDeviceMessageID(sender, device string, created int64, txnID string) string {
	h := sha256.New()
	for _, part := range []string{sender, device, strconv.FormatInt(created, 10), txnID} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}

// queueRemoteToDevice queues the messages for other servers' users (users
// sorted), one server after the other, unless the send's transaction ID is
// recorded already (a repeated send: it reports duplicate).
func (s *Service) queueRemoteToDevice(ctx context.Context, sender, senderDevice, evType, txnID string, users []string, messages map[string]map[string]json.RawMessage) (duplicate bool, err error) {
	var one int
	err = s.db.QueryRow(ctx, `SELECT 1 FROM to_device_txns WHERE user_id = $1 AND device_id = $2 AND txn_id = $3`, sender, senderDevice, txnID).Scan(&one)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("select to-device transaction of %s %s: %w", sender, senderDevice, err)
	}
	var created int64
	err = s.db.QueryRow(ctx, `SELECT created_ts FROM devices WHERE user_id = $1 AND device_id = $2`, sender, senderDevice).Scan(&created)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("select device %s %s: %w", sender, senderDevice, err)
	}
	base := toDeviceMessageID(sender, senderDevice, created, txnID)
	byServer := map[string][]string{}
	var servers []string
	for _, u := range users {
		srv := serverOf(u)
		if _, ok := byServer[srv]; !ok {
			servers = append(servers, srv)
		}
		byServer[srv] = append(byServer[srv], u)
	}
	sort.Strings(servers)
	for _, srv := range servers {
		for i, msgs := range splitToDevice(byServer[srv], messages) {
			id := base
			if i > 0 {
				id += "." + strconv.Itoa(i)
			}
			content, err := json.Marshal(toDeviceEDU{Sender: sender, Type: evType, MessageID: id, Messages: msgs})
			if err != nil {
				return false, fmt.Errorf("encode to-device EDU: %w", err)
			}
			err = s.opts.ToDeviceOut.QueueToDevice(ctx, srv, id, content)
			if errors.Is(err, ErrServerNotAllowed) {
				logging.From(ctx).WithFields(logrus.Fields{"user_id": sender, "server": srv}).Debug("to-device messages for a server outside the allowlist dropped")
				break
			}
			if err != nil {
				return false, fmt.Errorf("queue to-device messages of %s for %s: %w", sender, srv, err)
			}
		}
	}
	return false, nil
}

// toDeviceEDU is the content of an m.direct_to_device EDU.
type toDeviceEDU struct {
	Sender    string                                `json:"sender"`
	Type      string                                `json:"type"`
	MessageID string                                `json:"message_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// splitToDevice splits the messages for users (sorted) into the messages
// maps of EDUs of about ToDeviceEDUBytes each, in user and device order:
// the same request always splits the same way.
func splitToDevice(users []string, messages map[string]map[string]json.RawMessage) []map[string]map[string]json.RawMessage {
	var out []map[string]map[string]json.RawMessage
	cur := map[string]map[string]json.RawMessage{}
	size := 0
	for _, u := range users {
		for _, d := range sortedKeys(messages[u]) {
			c := json.RawMessage(compact(messages[u][d]))
			n := len(u) + len(d) + len(c) + 8
			if size > 0 && size+n > ToDeviceEDUBytes {
				out = append(out, cur)
				cur, size = map[string]map[string]json.RawMessage{}, 0
			}
			if cur[u] == nil {
				cur[u] = map[string]json.RawMessage{}
			}
			cur[u][d] = c
			size += n
		}
	}
	if size > 0 {
		out = append(out, cur)
	}
	return out
}

// ReceiveToDevice delivers an m.direct_to_device EDU of another server
// (origin) to this server's users' devices ("*": every device of the
// user), exactly once: the EDU's message ID is recorded in the
// transaction that queues the messages, and an EDU whose ID origin sent
// before (within InboundToDeviceRetention) is dropped. Messages for other
// servers' users, unknown devices and malformed contents are left out.
// A Matrix error (merr) means the EDU is unusable; any other error that it
// could not be stored now, and the origin should send it again.
func (s *Service) ReceiveToDevice(ctx context.Context, origin, sender, evType, messageID string, messages map[string]map[string]json.RawMessage) error {
	if err := CheckUserID(sender); err != nil {
		return err
	}
	if serverOf(sender) != origin {
		return merr.Forbidden("The sender %s is not a user of %s", sender, origin)
	}
	if evType == "" || len(evType) > MaxToDeviceTypeBytes || !storage.StorableText(evType) {
		return merr.InvalidParam("The event type must be 1 to %d bytes", MaxToDeviceTypeBytes)
	}
	if messageID == "" || len(messageID) > MaxMessageIDBytes || !storage.StorableText(messageID) {
		return merr.InvalidParam("The message_id must be 1 to %d bytes", MaxMessageIDBytes)
	}
	log := logging.From(ctx).WithFields(logrus.Fields{"origin": origin, "user_id": sender, "message_id": messageID})
	var local []string
	wildcard := map[string]bool{}
	usable := map[string]map[string]json.RawMessage{}
	for u, devs := range messages {
		if CheckUserID(u) != nil || serverOf(u) != s.opts.ServerName {
			continue
		}
		for d, content := range devs {
			c := strings.TrimSpace(string(content))
			if len(c) == 0 || c[0] != '{' || len(c) > MaxToDeviceContentBytes || !json.Valid([]byte(c)) {
				log.WithField("target", u).Debug("inbound to-device message with unusable content dropped")
				continue
			}
			if usable[u] == nil {
				usable[u] = map[string]json.RawMessage{}
			}
			usable[u][d] = json.RawMessage(c)
			if d == "*" {
				wildcard[u] = true
			}
		}
		if usable[u] != nil {
			local = append(local, u)
		}
	}
	sort.Strings(local)
	known, err := s.devicesOf(ctx, local)
	if err != nil {
		return err
	}
	rows := expandToDevice(local, usable, wildcard, known)
	if len(rows) == 0 {
		return nil
	}
	if len(rows) > MaxToDeviceTargets {
		return merr.TooLarge("At most %d devices per EDU", MaxToDeviceTargets)
	}
	now := s.now()
	clean := s.inboundCleanupDue(now)
	dup, err := s.commitToDevice(ctx, rows, sender, evType, func(tx *storage.Tx) (bool, error) {
		if clean {
			if _, err := tx.Exec(ctx, `DELETE FROM to_device_inbound WHERE ts < $1`, now.Add(-InboundToDeviceRetention).UnixMilli()); err != nil {
				return false, fmt.Errorf("delete old inbound to-device message IDs: %w", err)
			}
		}
		res, err := tx.Exec(ctx, `INSERT INTO to_device_inbound (origin, message_id, ts) VALUES ($1, $2, $3)
ON CONFLICT (origin, message_id) DO NOTHING`, origin, messageID, now.UnixMilli())
		if err != nil {
			return false, fmt.Errorf("record inbound to-device message %s of %s: %w", messageID, origin, err)
		}
		n, _ := res.RowsAffected()
		return n == 0, nil
	})
	if err != nil {
		return err
	}
	if dup {
		log.Debug("inbound to-device messages sent again; delivered before")
	}
	return nil
}

// inboundCleanupDue tells whether this delivery should also forget old
// inbound message IDs (at most once an hour).
func (s *Service) inboundCleanupDue(now time.Time) bool {
	s.txnCleanMu.Lock()
	defer s.txnCleanMu.Unlock()
	if now.Sub(s.inboundCleaned) < time.Hour {
		return false
	}
	s.inboundCleaned = now
	return true
}

// ClaimForServer answers another server's /user/keys/claim: as Claim, for
// this server's users only (others are left out of the answer).
func (s *Service) ClaimForServer(ctx context.Context, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	local := map[string]map[string]string{}
	for u, devs := range want {
		if err := CheckUserID(u); err != nil {
			return nil, err
		}
		if serverOf(u) == s.opts.ServerName {
			local[u] = devs
		}
	}
	resp, err := s.Claim(ctx, local)
	if err != nil {
		return nil, err
	}
	return resp.OneTimeKeys, nil
}

// checkClaimTarget validates one device and algorithm of a claim.
func checkClaimTarget(device, alg string) error {
	if alg == "" || len(alg) > MaxKeyIDBytes || strings.Contains(alg, ":") || !storage.StorableText(alg) {
		return merr.InvalidParam("%q is not a key algorithm", alg)
	}
	if !storage.StorableText(device) {
		return merr.InvalidParam("%q is not a device ID", device)
	}
	return nil
}

// ClaimTimeout is the wait for other servers that a /keys/claim asks for
// (milliseconds; nil: none named), within MinClaimTimeout and
// MaxClaimTimeout.
func ClaimTimeout(ms *int64) time.Duration {
	if ms == nil {
		return DefaultClaimTimeout
	}
	if *ms <= 0 {
		return MinClaimTimeout
	}
	if *ms >= MaxClaimTimeout.Milliseconds() {
		return MaxClaimTimeout
	}
	return max(time.Duration(*ms)*time.Millisecond, MinClaimTimeout)
}

// ClaimKeys answers a client's /keys/claim: this server's users' keys as
// Claim hands them out, and those of other servers' users asked of their
// servers, all at the same time, each given timeout. A server that fails
// or does not answer in time is named in failures ({"status", "message"});
// what it answers is kept only for the users of that server and the
// devices asked.
func (s *Service) ClaimKeys(ctx context.Context, want map[string]map[string]string, timeout time.Duration) (*ClaimResponse, error) {
	local := map[string]map[string]string{}
	remote := map[string]map[string]map[string]string{}
	for u, devs := range want {
		if err := CheckUserID(u); err != nil {
			return nil, err
		}
		for d, alg := range devs {
			if err := checkClaimTarget(d, alg); err != nil {
				return nil, err
			}
		}
		srv := serverOf(u)
		if srv == s.opts.ServerName {
			local[u] = devs
			continue
		}
		if len(devs) == 0 {
			continue
		}
		if remote[srv] == nil {
			remote[srv] = map[string]map[string]string{}
		}
		remote[srv][u] = devs
	}
	type answer struct {
		server string
		keys   map[string]map[string]map[string]json.RawMessage
		err    error
	}
	answers := make(chan answer, len(remote))
	if len(remote) > 0 {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		var wg sync.WaitGroup
		defer func() {
			cancel()
			wg.Wait()
		}()
		// A few askers take the servers in turn: a request naming
		// thousands of servers costs no more goroutines.
		servers := make(chan string, len(remote))
		for srv := range remote {
			servers <- srv
		}
		close(servers)
		for range min(claimServersAtOnce, len(remote)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for srv := range servers {
					if s.opts.Claimer == nil {
						answers <- answer{server: srv, err: errNoFederation}
						continue
					}
					if rctx.Err() != nil {
						answers <- answer{server: srv, err: rctx.Err()}
						continue
					}
					keys, err := s.opts.Claimer.ClaimKeys(rctx, srv, remote[srv])
					if err != nil && rctx.Err() != nil {
						err = rctx.Err()
					}
					answers <- answer{server: srv, keys: keys, err: err}
				}
			}()
		}
	}
	resp, err := s.Claim(ctx, local)
	if err != nil {
		return nil, err
	}
	log := logging.From(ctx)
	for range remote {
		a := <-answers
		if a.err != nil {
			resp.Failures[a.server] = claimFailure(a.err, timeout)
			log.WithError(a.err).WithField("server", a.server).Debug("keys: one-time keys of another server not claimed")
			continue
		}
		asked := remote[a.server]
		for u, devs := range a.keys {
			for d, k := range devs {
				if _, ok := asked[u][d]; !ok || len(k) == 0 {
					continue
				}
				if resp.OneTimeKeys[u] == nil {
					resp.OneTimeKeys[u] = map[string]map[string]json.RawMessage{}
				}
				resp.OneTimeKeys[u][d] = k
			}
		}
	}
	return resp, nil
}

// claimFailure is what failures says of a server that did not answer.
func claimFailure(err error, timeout time.Duration) json.RawMessage {
	status, msg := http.StatusServiceUnavailable, err.Error()
	if me, ok := merr.As(err); ok {
		status, msg = me.Status, me.Msg
	} else if errors.Is(err, context.DeadlineExceeded) {
		status, msg = http.StatusGatewayTimeout, fmt.Sprintf("No answer within %s", timeout)
	}
	out, _ := json.Marshal(map[string]any{"status": status, "message": msg})
	return out
}
