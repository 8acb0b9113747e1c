package roomserver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/storage"
)

// A send that repeats a transaction ID its device used before (a client's
// retry) answers with the first event before it takes a stream position.
// Asking the database for every send costs a query per message, so the
// writer keeps, per sending device, the transaction IDs of its sends of
// the last txnWindow: loaded with one query when the device first sends
// (in this process, or after the device fell out of the bounded cache), then
// kept up to date by the sends themselves. Only this process writes room
// events, so what it knows is complete. A device that sends more than
// txnsPerDevice messages in the window is checked with a query per send. A
// retry older than the window is still caught, by the events table's
// unique index, when the event is inserted: its position is then skipped.

// txnWindow is how long a transaction ID is recognised without a query;
// other servers keep theirs for as long or less.
const txnWindow = 24 * time.Hour

// txnsPerDevice bounds the transaction IDs kept for one device.
const txnsPerDevice = 2000

type txnDevice struct{ sender, device string }

type txnKey struct{ room, txn string }

type txnEntry struct {
	eventID string
	ts      int64 // origin_server_ts, Unix ms
}

// deviceTxns are one device's recent transaction IDs. complete is false
// when there were too many to keep: then every send asks the database.
type deviceTxns struct {
	mu       sync.Mutex
	ids      map[txnKey]txnEntry
	complete bool
}

type txnIndex struct {
	devices *lru.Cache[txnDevice, *deviceTxns]
}

func newTxnIndex(size int) *txnIndex {
	return &txnIndex{devices: lru.New[txnDevice, *deviceTxns]("recent_txn_ids", size)}
}

// lookup answers the event a device's transaction ID in a room stands
// for ("" when none). It runs inside the sending write transaction.
func (x *txnIndex) lookup(ctx context.Context, tx *storage.Tx, sender, device, room, txn string) (string, error) {
	d := txnDevice{sender, device}
	dt, ok := x.devices.Get(d)
	if !ok {
		var err error
		if dt, err = loadDeviceTxns(ctx, tx, sender, device); err != nil {
			return "", err
		}
		x.devices.Put(d, dt)
	}
	dt.mu.Lock()
	e, found := dt.ids[txnKey{room, txn}]
	complete := dt.complete
	dt.mu.Unlock()
	switch {
	case found:
		return e.eventID, nil
	case complete:
		return "", nil
	}
	id, err := selectTxn(ctx, tx, sender, device, room, txn)
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	return id, err
}

// loadDeviceTxns reads a device's transaction IDs of the last txnWindow.
func loadDeviceTxns(ctx context.Context, tx *storage.Tx, sender, device string) (*deviceTxns, error) {
	since := nowTime().Add(-txnWindow).UnixMilli()
	rows, err := tx.Query(ctx, `SELECT room_id, txn_id, event_id, origin_ts FROM events
WHERE sender = $1 AND device_id = $2 AND txn_id IS NOT NULL AND origin_ts >= $3 LIMIT $4`, sender, device, since, txnsPerDevice+1)
	if err != nil {
		return nil, fmt.Errorf("transaction IDs of %s %s: %w", sender, device, err)
	}
	defer rows.Close()
	dt := &deviceTxns{ids: map[txnKey]txnEntry{}, complete: true}
	for rows.Next() {
		var k txnKey
		var e txnEntry
		if err := rows.Scan(&k.room, &k.txn, &e.eventID, &e.ts); err != nil {
			return nil, err
		}
		dt.ids[k] = e
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(dt.ids) > txnsPerDevice {
		dt.ids, dt.complete = nil, false
	}
	return dt, nil
}

// committed records the transaction IDs of committed events.
func (x *txnIndex) committed(events []Event) {
	for i := range events {
		ev := &events[i]
		if ev.TxnID == "" {
			continue
		}
		dt, ok := x.devices.Peek(txnDevice{ev.Sender, ev.DeviceID})
		if !ok {
			continue // loaded, with this one, when the device next sends
		}
		dt.mu.Lock()
		if dt.complete {
			dt.ids[txnKey{ev.RoomID, ev.TxnID}] = txnEntry{eventID: ev.EventID, ts: ev.OriginTS}
			if len(dt.ids) > txnsPerDevice {
				dt.prune()
			}
		}
		dt.mu.Unlock()
	}
}

// prune drops the entries older than the window; a device still over the
// bound is asked of the database from then on. dt.mu is held.
func (dt *deviceTxns) prune() {
	cutoff := nowTime().Add(-txnWindow).UnixMilli()
	for k, e := range dt.ids {
		if e.ts < cutoff {
			delete(dt.ids, k)
		}
	}
	if len(dt.ids) > txnsPerDevice {
		dt.ids, dt.complete = nil, false
	}
}
