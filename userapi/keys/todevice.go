package keys

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/backoff"
	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Limits of to-device messages.
const (
	// MaxToDeviceTypeBytes bounds the event type.
	MaxToDeviceTypeBytes = 255
	// MaxTxnIDBytes bounds the transaction ID.
	MaxTxnIDBytes = 255
	// MaxToDeviceContentBytes bounds one message's content.
	MaxToDeviceContentBytes = 64 << 10
	// MaxToDeviceTargets bounds the devices of one send (after "*").
	MaxToDeviceTargets = 10000
	// ToDeviceTxnLifetime is how long a transaction ID is remembered.
	ToDeviceTxnLifetime = 24 * time.Hour
)

type tdRow struct {
	user, device, content string
}

// SendToDevice queues messages for devices: messages maps user → device
// ("*" for every device of the user) → content. It is idempotent per
// sending device and transaction ID, also across restarts. Messages for
// unknown users and devices of this server are dropped. Those for other
// servers' users become m.direct_to_device EDUs in the federation queues
// (todevice_remote.go), queued before this returns; without federation they are
// dropped.
func (s *Service) SendToDevice(ctx context.Context, sender, senderDevice, evType, txnID string, messages map[string]map[string]json.RawMessage) error {
	if evType == "" || len(evType) > MaxToDeviceTypeBytes {
		return merr.InvalidParam("The event type must be 1 to %d bytes", MaxToDeviceTypeBytes)
	}
	if txnID == "" || len(txnID) > MaxTxnIDBytes {
		return merr.InvalidParam("The transaction ID must be 1 to %d bytes", MaxTxnIDBytes)
	}
	log := logging.From(ctx)
	var local, remote []string
	wildcard := map[string]bool{}
	remoteTargets := 0
	for u, devs := range messages {
		if err := CheckUserID(u); err != nil {
			return err
		}
		for d, content := range devs {
			c := bytes.TrimSpace(content)
			if len(c) == 0 || c[0] != '{' || !json.Valid(c) {
				return merr.BadJSON("The content for %s %s must be a JSON object", u, d)
			}
			if len(c) > MaxToDeviceContentBytes {
				return merr.TooLarge("The content for %s %s is larger than %d bytes", u, d, MaxToDeviceContentBytes)
			}
			if d == "*" {
				wildcard[u] = true
			}
		}
		if serverOf(u) != s.opts.ServerName {
			if s.opts.ToDeviceOut == nil || !ids.ValidServerName(serverOf(u)) {
				log.WithFields(logrus.Fields{"user_id": sender, "target": u}).Debug("to-device message for a remote user dropped: federation is off, or no server")
				continue
			}
			for d := range devs {
				if d == "" || !storage.StorableText(d) {
					return merr.InvalidParam("%q is not a device ID", d)
				}
			}
			remote = append(remote, u)
			remoteTargets += len(devs)
			continue
		}
		local = append(local, u)
	}
	sort.Strings(local)
	sort.Strings(remote)
	// Expand "*" and drop unknown devices.
	known, err := s.devicesOf(ctx, local)
	if err != nil {
		return err
	}
	rows := expandToDevice(local, messages, wildcard, known)
	if len(rows)+remoteTargets > MaxToDeviceTargets {
		return merr.TooLarge("At most %d devices per send", MaxToDeviceTargets)
	}
	if len(remote) > 0 {
		// Queued first: a failure leaves nothing recorded, and the
		// client's retry queues them again under the same message IDs,
		// which the other servers deliver once.
		dup, err := s.queueRemoteToDevice(ctx, sender, senderDevice, evType, txnID, remote, messages)
		if err != nil {
			return err
		}
		if dup {
			log.WithFields(logrus.Fields{"user_id": sender, "device_id": senderDevice, "txn_id": txnID}).Debug("to-device send repeated; already queued")
			return nil
		}
	}
	now := s.now()
	cleanTxns := s.txnCleanupDue(now)
	duplicate, err := s.commitToDevice(ctx, rows, sender, evType, func(tx *storage.Tx) (bool, error) {
		if cleanTxns {
			if _, err := tx.Exec(ctx, `DELETE FROM to_device_txns WHERE ts < $1`, now.Add(-ToDeviceTxnLifetime).UnixMilli()); err != nil {
				return false, fmt.Errorf("delete old to-device transactions: %w", err)
			}
		}
		res, err := tx.Exec(ctx, `INSERT INTO to_device_txns (user_id, device_id, txn_id, ts) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, device_id, txn_id) DO NOTHING`, sender, senderDevice, txnID, now.UnixMilli())
		if err != nil {
			return false, fmt.Errorf("insert to-device transaction of %s %s: %w", sender, senderDevice, err)
		}
		n, _ := res.RowsAffected()
		return n == 0, nil
	})
	if err != nil {
		return err
	}
	if duplicate {
		log.WithFields(logrus.Fields{"user_id": sender, "device_id": senderDevice, "txn_id": txnID}).Debug("to-device send repeated; already queued")
	}
	return nil
}

// expandToDevice makes the rows of a send to this server's users (sorted):
// "*" becomes every known device of the user (a device also named on its
// own gets its own content), and unknown devices are dropped.
func expandToDevice(users []string, messages map[string]map[string]json.RawMessage, wildcard map[string]bool, known map[string][]string) []tdRow {
	var rows []tdRow
	for _, u := range users {
		devs := messages[u]
		if wildcard[u] {
			content := compact(devs["*"])
			for _, d := range known[u] {
				if c, ok := devs[d]; ok {
					rows = append(rows, tdRow{u, d, compact(c)})
				} else {
					rows = append(rows, tdRow{u, d, content})
				}
			}
			continue
		}
		for _, d := range sortedKeys(devs) {
			if contains(known[u], d) {
				rows = append(rows, tdRow{u, d, compact(devs[d])})
			}
		}
	}
	return rows
}

// commitToDevice queues rows, in one transaction with what record writes
// (the send's transaction ID, or an inbound EDU's message ID). When record
// reports a duplicate nothing is queued. After the commit one
// ToDeviceNotice tells of the rows whose device still existed.
func (s *Service) commitToDevice(ctx context.Context, rows []tdRow, sender, evType string, record func(tx *storage.Tx) (duplicate bool, err error)) (bool, error) {
	var first int64
	if len(rows) > 0 {
		first = s.tdSeq.NextN(len(rows))
	}
	inserted := make([]bool, len(rows))
	duplicate := false
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		duplicate = false
		for i := range inserted {
			inserted[i] = false
		}
		if len(rows) > 0 {
			if _, err := tx.Exec(ctx, upsertStreamPosition, streamToDevice, first+int64(len(rows))-1); err != nil {
				return fmt.Errorf("record to-device position: %w", err)
			}
		}
		dup, err := record(tx)
		if err != nil {
			return err
		}
		if dup {
			duplicate = true
			return nil
		}
		return insertToDevice(ctx, tx, first, rows, sender, evType, inserted)
	})
	var notice ToDeviceNotice
	if err == nil && !duplicate {
		for i, r := range rows {
			if inserted[i] {
				notice.Targets = append(notice.Targets, ToDeviceTarget{UserID: r.user, DeviceID: r.device, Pos: first + int64(i)})
			}
		}
	}
	for i := range rows {
		var payload any
		if i == len(rows)-1 && len(notice.Targets) > 0 {
			payload = notice
		}
		s.tdSeq.Done(first+int64(i), payload)
	}
	return duplicate, err
}

// toDeviceBatches are the row counts of one INSERT: few distinct texts, so
// that SQLite keeps them prepared.
var toDeviceBatches = []int{128, 32, 8, 1}

var toDeviceInserts = func() map[int]string {
	m := map[int]string{}
	for _, n := range toDeviceBatches {
		var b strings.Builder
		b.WriteString(`INSERT INTO to_device (pos, user_id, device_id, sender, type, content)
SELECT v.column1, v.column2, v.column3, $1, $2, v.column4 FROM (VALUES `)
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "(CAST($%d AS BIGINT), $%d, $%d, $%d)", 3+4*i, 4+4*i, 5+4*i, 6+4*i)
		}
		// The device may have been deleted since it was looked up.
		b.WriteString(`) AS v
WHERE EXISTS (SELECT 1 FROM devices d WHERE d.user_id = v.column2 AND d.device_id = v.column3) RETURNING pos`)
		m[n] = b.String()
	}
	return m
}()

// insertToDevice queues the rows at positions first, first+1, ... and marks
// those whose device still exists in inserted.
func insertToDevice(ctx context.Context, tx *storage.Tx, first int64, rows []tdRow, sender, evType string, inserted []bool) error {
	for i := 0; i < len(rows); {
		n := 1
		for _, c := range toDeviceBatches {
			if len(rows)-i >= c {
				n = c
				break
			}
		}
		args := make([]any, 0, 2+4*n)
		args = append(args, sender, evType)
		for j, r := range rows[i : i+n] {
			args = append(args, first+int64(i+j), r.user, r.device, r.content)
		}
		res, err := tx.Query(ctx, toDeviceInserts[n], args...)
		if err != nil {
			return fmt.Errorf("queue to-device messages from %s: %w", sender, err)
		}
		for res.Next() {
			var pos int64
			if err := res.Scan(&pos); err != nil {
				res.Close()
				return fmt.Errorf("queue to-device messages from %s: %w", sender, err)
			}
			if k := pos - first; k >= 0 && k < int64(len(inserted)) {
				inserted[k] = true
			}
		}
		res.Close()
		if err := res.Err(); err != nil {
			return fmt.Errorf("queue to-device messages from %s: %w", sender, err)
		}
		i += n
	}
	return nil
}

func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

// txnCleanupDue tells whether this send should also forget old transaction
// IDs (at most once an hour).
func (s *Service) txnCleanupDue(now time.Time) bool {
	s.txnCleanMu.Lock()
	defer s.txnCleanMu.Unlock()
	if now.Sub(s.txnCleaned) < time.Hour {
		return false
	}
	s.txnCleaned = now
	return true
}

// devicesOf returns the device IDs of the users, sorted; a query per
// devicesBatch users (the databases bound a statement's parameters).
func (s *Service) devicesOf(ctx context.Context, users []string) (map[string][]string, error) {
	out := map[string][]string{}
	for start := 0; start < len(users); start += devicesBatch {
		if err := s.devicesOfBatch(ctx, users[start:min(start+devicesBatch, len(users))], out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

const devicesBatch = 1000

func (s *Service) devicesOfBatch(ctx context.Context, users []string, out map[string][]string) error {
	rows, err := s.db.Query(ctx, `SELECT user_id, device_id FROM devices WHERE user_id IN ($1) ORDER BY user_id, device_id`, users)
	if err != nil {
		return fmt.Errorf("select devices: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u, d string
		if err := rows.Scan(&u, &d); err != nil {
			return fmt.Errorf("select devices: %w", err)
		}
		out[u] = append(out[u], d)
	}
	return rows.Err()
}

// ToDeviceMessages returns up to limit messages queued for the device at
// positions in (after, upto], in position order, as /sync events, and the
// position of the last one (0 when there is none).
func (s *Service) ToDeviceMessages(ctx context.Context, userID, deviceID string, after, upto int64, limit int) ([]json.RawMessage, int64, error) {
	rows, err := s.db.Query(ctx, `SELECT pos, sender, type, content FROM to_device
WHERE user_id = $1 AND device_id = $2 AND pos > $3 AND pos <= $4 ORDER BY pos LIMIT $5`, userID, deviceID, after, upto, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("select to-device messages of %s %s: %w", userID, deviceID, err)
	}
	defer rows.Close()
	var out []json.RawMessage
	var last int64
	for rows.Next() {
		var sender, typ, content string
		if err := rows.Scan(&last, &sender, &typ, &content); err != nil {
			return nil, 0, fmt.Errorf("select to-device messages of %s %s: %w", userID, deviceID, err)
		}
		ev, err := json.Marshal(struct {
			Sender  string          `json:"sender"`
			Type    string          `json:"type"`
			Content json.RawMessage `json:"content"`
		}{sender, typ, json.RawMessage(content)})
		if err != nil {
			return nil, 0, fmt.Errorf("encode to-device message %d: %w", last, err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("select to-device messages of %s %s: %w", userID, deviceID, err)
	}
	return out, last, nil
}

// AckToDevice records that the device has its messages at positions up to
// upto (it synced with a token past them); they are deleted within
// ackDelay, together with the other devices' acknowledgements, in one
// transaction. The delete only collects garbage: reads start after the
// device's since token, so acknowledged messages are never read again, and
// a delete that fails or is lost in a crash leaves rows that the device's
// next acknowledgement deletes.
func (s *Service) AckToDevice(ctx context.Context, userID, deviceID string, upto int64) error {
	s.acks.add(deviceKey{userID, deviceID}, upto)
	return nil
}

// FlushAcks deletes the acknowledged messages now.
func (s *Service) FlushAcks(ctx context.Context) error { return s.acks.flush(ctx) }

// ackDelay is how long acknowledgements gather before their transaction.
const ackDelay = 50 * time.Millisecond

// ackQueue gathers acknowledgements: one transaction for the acks of a
// fan-out to 100 devices instead of 100.
type ackQueue struct {
	s    *Service
	mu   sync.Mutex
	acks map[deviceKey]int64
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newAckQueue(s *Service) *ackQueue {
	q := &ackQueue{s: s, acks: map[deviceKey]int64{}, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go q.loop()
	return q
}

func (q *ackQueue) add(k deviceKey, upto int64) {
	q.mu.Lock()
	q.acks[k] = max(q.acks[k], upto)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *ackQueue) loop() {
	defer close(q.done)
	ctx := context.Background()
	for backoff.Gather(q.wake, q.stop, ackDelay) {
		if err := q.flush(ctx); err != nil {
			logging.From(ctx).WithError(err).Warn("cannot delete delivered to-device messages")
		}
	}
}

// flush deletes what the queued acknowledgements cover, in one transaction.
func (q *ackQueue) flush(ctx context.Context) error {
	q.mu.Lock()
	acks := q.acks
	q.acks = map[deviceKey]int64{}
	q.mu.Unlock()
	if len(acks) == 0 {
		return nil
	}
	return q.s.db.Write(ctx, func(tx *storage.Tx) error {
		if tx.Dialect() == storage.Postgres {
			// Garbage collection: the commit need not wait for the WAL flush.
			if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit TO OFF`); err != nil {
				return fmt.Errorf("ack to-device messages: %w", err)
			}
		}
		for k, upto := range acks {
			if _, err := tx.Exec(ctx, `DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND pos <= $3`, k.user, k.device, upto); err != nil {
				return fmt.Errorf("delete delivered to-device messages of %s %s: %w", k.user, k.device, err)
			}
		}
		return nil
	})
}

// close deletes what is queued and stops.
func (q *ackQueue) close() {
	q.once.Do(func() {
		close(q.stop)
		<-q.done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := q.flush(ctx); err != nil {
			logging.From(ctx).WithError(err).Warn("cannot delete delivered to-device messages")
		}
	})
}

// ToDeviceBacklog calls fn with every device that has queued messages and
// the lowest and highest position of its queue.
func (s *Service) ToDeviceBacklog(ctx context.Context, fn func(userID, deviceID string, lowest, highest int64)) error {
	rows, err := s.db.Query(ctx, `SELECT user_id, device_id, MIN(pos), MAX(pos) FROM to_device GROUP BY user_id, device_id`)
	if err != nil {
		return fmt.Errorf("select to-device backlog: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u, d string
		var lo, hi int64
		if err := rows.Scan(&u, &d, &lo, &hi); err != nil {
			return fmt.Errorf("select to-device backlog: %w", err)
		}
		fn(u, d, lo, hi)
	}
	return rows.Err()
}
