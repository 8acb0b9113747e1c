package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haven-chat/haven/internal/keyed"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/internal/stream"
	"github.com/haven-chat/haven/storage"
)

// Bus topics of the key service.
const (
	// TopicToDevice carries ToDeviceNotice: messages committed for devices.
	TopicToDevice = "to_device"
	// TopicDeviceLists carries DeviceListNotice: a user's devices or keys changed.
	TopicDeviceLists = "device_lists"
	// TopicKeyCounts tells other processes that a device's one-time or
	// fallback keys changed, so they drop their cached counts.
	TopicKeyCounts = "keys.counts"
)

// ToDeviceTarget is one queued message: its device and stream position.
type ToDeviceTarget struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
	Pos      int64  `json:"pos"`
}

// ToDeviceNotice is published after a send commits, once every position up
// to the last of its targets is visible. Targets are in position order.
type ToDeviceNotice struct {
	Targets []ToDeviceTarget `json:"targets"`
}

// DeviceListNotice is published after a change of a user's device list
// commits, in position order. A change of n devices takes n positions, the
// last of which is Pos: Devices[i] changed at Pos-n+1+i (the stream IDs of
// the m.device_list_update EDUs sent to other servers). Prev is the user's
// position before the change (0: none), CrossSigning says the user's
// master or self-signing key (or a signature on it) changed.
type DeviceListNotice struct {
	UserID       string   `json:"user_id"`
	Pos          int64    `json:"pos"`
	Prev         int64    `json:"prev,omitempty"`
	Devices      []string `json:"devices,omitempty"`
	CrossSigning bool     `json:"cross_signing,omitempty"`
}

type countsNotice struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
}

// Bus is the part of the message bus the key service needs.
type Bus interface {
	Publish(topic string, data []byte) error
	Subscribe(topic string, fn func(data []byte)) (func(), error)
}

// Options configure the key service.
type Options struct {
	// ServerName tells local users (whose keys are here) from remote ones.
	ServerName string
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// ToDeviceOut and Claimer reach other servers' users (todevice_remote.go);
	// nil without federation.
	ToDeviceOut ToDeviceQueue
	Claimer     KeyClaimer
}

// Service is the key service. All its methods are safe for concurrent use.
type Service struct {
	db   *storage.DB
	bus  Bus
	opts Options
	now  func() time.Time

	// userLocks serialise one user's key changes (read, check, write).
	userLocks keyed.Mutex
	// tdSeq and dlSeq hand out the to-device and device list positions.
	tdSeq *stream.Sequencer
	dlSeq *stream.Sequencer

	// counts caches each device's one-time key counts and unused fallback
	// key types, so that every /sync can carry them without a query.
	counts    *lru.Cache[deviceKey, keyCounts]
	countsGen atomic.Uint64

	txnCleanMu     sync.Mutex
	txnCleaned     time.Time
	inboundCleaned time.Time

	unsub func()
	acks  *ackQueue
}

type deviceKey struct{ user, device string }

type keyCounts struct {
	otk      map[string]int
	fallback []string
}

// New creates the key service. bus may be nil (tests, tools): nothing is
// published then.
func New(ctx context.Context, db *storage.DB, bus Bus, opts Options) (*Service, error) {
	if opts.ServerName == "" {
		return nil, fmt.Errorf("keys: server name is empty")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	// The streams continue above the positions stored and above those
	// handed out before (key_stream_positions): delivered to-device rows
	// are gone, but clients' sync tokens may still name their positions.
	var lastTD, lastDL int64
	if err := db.QueryRow(ctx, `SELECT COALESCE(MAX(pos), 0) FROM (SELECT MAX(pos) AS pos FROM to_device
UNION ALL SELECT pos FROM key_stream_positions WHERE stream = $1) p`, streamToDevice).Scan(&lastTD); err != nil {
		return nil, fmt.Errorf("select max to-device position: %w", err)
	}
	if err := db.QueryRow(ctx, `SELECT COALESCE(MAX(pos), 0) FROM (SELECT MAX(pos) AS pos FROM device_list_changes
UNION ALL SELECT pos FROM key_stream_positions WHERE stream = $1) p`, streamDeviceLists).Scan(&lastDL); err != nil {
		return nil, fmt.Errorf("select max device list position: %w", err)
	}
	s := &Service{
		db: db, bus: bus, opts: opts, now: now,
		counts: lru.New[deviceKey, keyCounts]("key_counts", 50000),
	}
	floorTD, err := storage.StreamFloor(ctx, db, storage.StreamToDevice)
	if err != nil {
		return nil, err
	}
	floorDL, err := storage.StreamFloor(ctx, db, storage.StreamDeviceLists)
	if err != nil {
		return nil, err
	}
	s.tdSeq = stream.New(max(lastTD, floorTD), s.publishNotice(TopicToDevice))
	s.dlSeq = stream.New(max(lastDL, floorDL), s.publishNotice(TopicDeviceLists))
	s.acks = newAckQueue(s)
	return s, nil
}

// Start removes the keys of devices that no longer exist (left behind if
// the process stopped between a device's deletion and the clean-up) and
// subscribes to other processes' key count changes.
func (s *Service) Start(ctx context.Context) error {
	if err := s.deleteOrphans(ctx); err != nil {
		return err
	}
	if s.bus != nil {
		unsub, err := s.bus.Subscribe(TopicKeyCounts, func(data []byte) {
			var n countsNotice
			if json.Unmarshal(data, &n) == nil {
				s.dropCounts(n.UserID, n.DeviceID)
			}
		})
		if err != nil {
			return fmt.Errorf("keys: %w", err)
		}
		s.unsub = unsub
	}
	return nil
}

// Close unsubscribes from the bus.
func (s *Service) Close() {
	if s.unsub != nil {
		s.unsub()
		s.unsub = nil
	}
	s.acks.close()
}

func (s *Service) deleteOrphans(ctx context.Context) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		for _, table := range []string{"device_keys", "one_time_keys", "fallback_keys"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE NOT EXISTS
(SELECT 1 FROM devices d WHERE d.user_id = `+table+`.user_id AND d.device_id = `+table+`.device_id)`); err != nil {
				return fmt.Errorf("delete keys of deleted devices from %s: %w", table, err)
			}
		}
		return nil
	})
}

// ToDevicePosition is the highest visible position of the to-device stream.
func (s *Service) ToDevicePosition() int64 { return s.tdSeq.Visible() }

// DeviceListPosition is the highest visible position of the device list stream.
func (s *Service) DeviceListPosition() int64 { return s.dlSeq.Visible() }

// publish sends a notice; a failure is logged (the database has the data;
// sync engines catch up at their next start).
// publishNotice is the sequencers' publish function for the to-device and
// device list streams. A position with no notice (a failed write, a device
// list write that changed nothing, a to-device message but the last of its
// send) is not published: these streams' readers keep the latest position
// per device or user and never wait for a particular one.
func (s *Service) publishNotice(topic string) stream.Publish {
	return func(_ int64, p any) {
		if p != nil {
			s.publish(context.Background(), topic, p)
		}
	}
}

func (s *Service) publish(ctx context.Context, topic string, v any) {
	if s.bus == nil {
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	if err := s.bus.Publish(topic, data); err != nil {
		logging.From(ctx).WithError(err).WithField("topic", topic).Warn("cannot publish key notice")
	}
}

// ---- device lists ----

const upsertDeviceListChange = `INSERT INTO device_list_changes (user_id, pos) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET pos = CASE WHEN excluded.pos > device_list_changes.pos THEN excluded.pos ELSE device_list_changes.pos END`

// The streams of key_stream_positions.
const (
	streamToDevice    = "to_device"
	streamDeviceLists = "device_lists"
)

// upsertStreamPosition records a position handed out on a stream, in the
// transaction that uses it.
const upsertStreamPosition = `INSERT INTO key_stream_positions (stream, pos) VALUES ($1, $2)
ON CONFLICT (stream) DO UPDATE SET pos = excluded.pos WHERE key_stream_positions.pos < excluded.pos`

// listChange says what a device list change touches: the devices whose
// keys, names or existence changed, and the cross-signing keys.
type listChange struct {
	devices      []string
	crossSigning bool
}

// changeDeviceList runs write in a transaction together with the record of
// a change of userID's device list (when write reports changed), and
// publishes the change after the commit. It takes one position per device
// of c (at least one).
func (s *Service) changeDeviceList(ctx context.Context, userID string, c listChange, write func(tx *storage.Tx) (changed bool, err error)) error {
	n := max(1, len(c.devices))
	first := s.dlSeq.NextN(n)
	pos := first + int64(n) - 1
	changed := false
	var prev int64
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		ch, err := write(tx)
		if err != nil {
			return err
		}
		// Recorded even when nothing changed: the position becomes visible.
		if _, err := tx.Exec(ctx, upsertStreamPosition, streamDeviceLists, pos); err != nil {
			return fmt.Errorf("record device list position: %w", err)
		}
		if !ch {
			return nil
		}
		prev = 0
		if err := tx.QueryRow(ctx, `SELECT pos FROM device_list_changes WHERE user_id = $1`, userID).Scan(&prev); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("select device list position of %s: %w", userID, err)
		}
		if _, err := tx.Exec(ctx, upsertDeviceListChange, userID, pos); err != nil {
			return fmt.Errorf("record device list change of %s: %w", userID, err)
		}
		changed = true
		return nil
	})
	var payload any
	if err == nil && changed {
		payload = DeviceListNotice{UserID: userID, Pos: pos, Prev: prev, Devices: c.devices, CrossSigning: c.crossSigning}
	}
	for p := first; p < pos; p++ {
		s.dlSeq.Done(p, nil)
	}
	s.dlSeq.Done(pos, payload)
	return err
}

// AllDeviceListChanges calls fn with every user's latest device list position.
func (s *Service) AllDeviceListChanges(ctx context.Context, fn func(userID string, pos int64)) error {
	rows, err := s.db.Query(ctx, `SELECT user_id, pos FROM device_list_changes`)
	if err != nil {
		return fmt.Errorf("select device list changes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		var p int64
		if err := rows.Scan(&u, &p); err != nil {
			return fmt.Errorf("select device list changes: %w", err)
		}
		fn(u, p)
	}
	return rows.Err()
}

// DevicesChanged is called by the user API after devices of userID were
// added (login, registration), deleted or renamed (both lists empty) and the
// change committed. It removes the deleted (or re-created) devices' keys and
// records the change on the device list stream.
func (s *Service) DevicesChanged(ctx context.Context, userID string, added, deleted []string) {
	unlock := s.userLocks.Lock(userID)
	defer unlock()
	gone := append(append([]string{}, added...), deleted...)
	err := s.changeDeviceList(ctx, userID, listChange{devices: sortedUnique(gone)}, func(tx *storage.Tx) (bool, error) {
		if len(gone) == 0 {
			return true, nil
		}
		// Keys, and the transaction IDs of sends (a device re-created with
		// the same ID starts afresh).
		for _, table := range []string{"device_keys", "one_time_keys", "fallback_keys", "to_device_txns"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE user_id = $1 AND device_id IN ($2)`, userID, gone); err != nil {
				return false, fmt.Errorf("delete keys of devices of %s: %w", userID, err)
			}
		}
		// Signatures of the deleted devices and those they made on the master key.
		if _, err := tx.Exec(ctx, `DELETE FROM key_signatures WHERE target_user = $1 AND target_key IN ($2)`, userID, gone); err != nil {
			return false, fmt.Errorf("delete signatures of devices of %s: %w", userID, err)
		}
		signers := make([]string, len(gone))
		for i, d := range gone {
			signers[i] = "ed25519:" + d
		}
		if _, err := tx.Exec(ctx, `DELETE FROM key_signatures WHERE signer_user = $1 AND signer_key IN ($2)`, userID, signers); err != nil {
			return false, fmt.Errorf("delete signatures by devices of %s: %w", userID, err)
		}
		return true, nil
	})
	for _, d := range gone {
		s.dropCounts(userID, d)
	}
	if err != nil {
		logging.From(ctx).WithError(err).WithField("user_id", userID).Error("cannot record device list change")
	}
}

// DeviceRenamed records the rename of a device of userID (its name is in
// other users' /keys/query answers and in the updates sent to other
// servers).
func (s *Service) DeviceRenamed(ctx context.Context, userID, deviceID string) {
	unlock := s.userLocks.Lock(userID)
	defer unlock()
	err := s.changeDeviceList(ctx, userID, listChange{devices: []string{deviceID}}, func(*storage.Tx) (bool, error) { return true, nil })
	if err != nil {
		logging.From(ctx).WithError(err).WithField("user_id", userID).Error("cannot record device list change")
	}
}

// sortedUnique returns the strings sorted, each once.
func sortedUnique(list []string) []string {
	if len(list) == 0 {
		return nil
	}
	out := append([]string{}, list...)
	sort.Strings(out)
	return slices.Compact(out)
}

// ---- key counts cache ----

func (s *Service) dropCounts(userID, deviceID string) {
	s.countsGen.Add(1)
	s.counts.Remove(deviceKey{userID, deviceID})
}

// countsChanged drops the cached counts here and in other processes.
func (s *Service) countsChanged(ctx context.Context, userID, deviceID string) {
	s.dropCounts(userID, deviceID)
	s.publish(ctx, TopicKeyCounts, countsNotice{UserID: userID, DeviceID: deviceID})
}

// KeyCounts returns the device's count of one-time keys per algorithm
// (signed_curve25519 always present, as clients expect) and the algorithms
// of its unused fallback keys, from memory when cached.
func (s *Service) KeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error) {
	k := deviceKey{userID, deviceID}
	if c, ok := s.counts.Get(k); ok {
		return c.otk, c.fallback, nil
	}
	gen := s.countsGen.Load()
	c, err := selectCounts(ctx, s.db, userID, deviceID)
	if err != nil {
		return nil, nil, err
	}
	if s.countsGen.Load() == gen {
		s.counts.Put(k, c)
	}
	return c.otk, c.fallback, nil
}

func selectCounts(ctx context.Context, q storage.Querier, userID, deviceID string) (keyCounts, error) {
	c := keyCounts{otk: map[string]int{"signed_curve25519": 0}, fallback: []string{}}
	rows, err := q.Query(ctx, `SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return c, fmt.Errorf("count one-time keys of %s %s: %w", userID, deviceID, err)
	}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			rows.Close()
			return c, fmt.Errorf("count one-time keys of %s %s: %w", userID, deviceID, err)
		}
		c.otk[alg] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("count one-time keys of %s %s: %w", userID, deviceID, err)
	}
	rows, err = q.Query(ctx, `SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = FALSE ORDER BY algorithm`, userID, deviceID)
	if err != nil {
		return c, fmt.Errorf("select fallback keys of %s %s: %w", userID, deviceID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var alg string
		if err := rows.Scan(&alg); err != nil {
			return c, fmt.Errorf("select fallback keys of %s %s: %w", userID, deviceID, err)
		}
		c.fallback = append(c.fallback, alg)
	}
	return c, rows.Err()
}
