package streams

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
)

// ToDeviceLimit is how many to-device messages one response carries at
// most; the rest come in the next ones.
const ToDeviceLimit = 100

// toDeviceSource is the key service's to-device queue (userapi/keys).
type toDeviceSource interface {
	ToDeviceMessages(ctx context.Context, userID, deviceID string, after, upto int64, limit int) ([]json.RawMessage, int64, error)
	AckToDevice(ctx context.Context, userID, deviceID string, upto int64) error
	ToDeviceBacklog(ctx context.Context, fn func(userID, deviceID string, lowest, highest int64)) error
}

type devKey struct{ user, device string }

// ToDevice is the to-device stream: messages queued for one device, by
// position, which a response delivers and the device's next token
// acknowledges (they are deleted then). It remembers, per device, what is
// queued, so that a sync asks the database only when there is something
// to read or delete.
type ToDevice struct {
	src toDeviceSource // nil: no key service, no to-device messages
	// mu is a leaf lock.
	mu sync.Mutex
	// queued[device] is the latest position queued for the device;
	// pending[device] the lowest position that may still be stored
	// (delivered or not). Both are dropped once the device acknowledged all.
	queued  map[devKey]int64
	pending map[devKey]int64
}

// NewToDevice reads the to-device stream from src (nil for none).
func NewToDevice(src toDeviceSource) *ToDevice {
	return &ToDevice{src: src, queued: map[devKey]int64{}, pending: map[devKey]int64{}}
}

// Load seeds what is queued from the database, at start.
func (t *ToDevice) Load(ctx context.Context) error {
	if t.src == nil {
		return nil
	}
	return t.src.ToDeviceBacklog(ctx, func(u, d string, lo, hi int64) {
		t.mu.Lock()
		dk := devKey{u, d}
		t.queued[dk] = max(t.queued[dk], hi)
		if p, ok := t.pending[dk]; !ok || lo < p {
			t.pending[dk] = lo
		}
		t.mu.Unlock()
	})
}

// Queued notes a message queued for a device at pos (from the bus).
func (t *ToDevice) Queued(userID, deviceID string, pos int64) {
	dk := devKey{userID, deviceID}
	t.mu.Lock()
	t.queued[dk] = max(t.queued[dk], pos)
	if _, ok := t.pending[dk]; !ok {
		t.pending[dk] = pos
	}
	t.mu.Unlock()
}

// Ack deletes the device's messages up to since: a sync with that token
// means the device has them. It costs nothing when there is nothing to
// delete; a failure is logged (the messages are delivered again).
func (t *ToDevice) Ack(ctx context.Context, userID, deviceID string, since int64) {
	if t.src == nil || since <= 0 {
		return
	}
	dk := devKey{userID, deviceID}
	t.mu.Lock()
	p, ok := t.pending[dk]
	t.mu.Unlock()
	if !ok || since < p {
		return
	}
	if err := t.src.AckToDevice(ctx, userID, deviceID, since); err != nil {
		logging.From(ctx).WithError(err).WithFields(logrus.Fields{"user_id": userID, "device_id": deviceID}).Warn("cannot delete delivered to-device messages")
		return
	}
	t.mu.Lock()
	if t.queued[dk] > since {
		if t.pending[dk] <= since {
			t.pending[dk] = since + 1
		}
	} else {
		delete(t.pending, dk)
		delete(t.queued, dk)
	}
	t.mu.Unlock()
}

// Messages returns the device's messages in (after, upto], at most
// ToDeviceLimit, and the position the answer reaches: upto, or the last
// message's position when more wait.
func (t *ToDevice) Messages(ctx context.Context, userID, deviceID string, after, upto int64) ([]json.RawMessage, int64, error) {
	if t.src == nil || upto <= after {
		return nil, upto, nil
	}
	t.mu.Lock()
	queued := t.queued[devKey{userID, deviceID}]
	t.mu.Unlock()
	if queued <= after {
		return nil, upto, nil
	}
	evs, last, err := t.src.ToDeviceMessages(ctx, userID, deviceID, after, upto, ToDeviceLimit)
	if err != nil {
		return nil, 0, err
	}
	if len(evs) == ToDeviceLimit && last < upto {
		return evs, last, nil
	}
	return evs, upto, nil
}
