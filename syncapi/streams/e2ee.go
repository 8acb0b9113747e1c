package streams

import "context"

// keyCountSource is the key service's counts (userapi/keys), answered
// from its memory when it can.
type keyCountSource interface {
	KeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error)
}

// KeyCounts is the E2EE counts of a device: its one-time key counts by
// algorithm and its unused fallback key types. Every response carries
// them; they are not a stream of changes but a sample of the present.
type KeyCounts struct{ src keyCountSource }

// NewKeyCounts reads key counts from src (nil for none).
func NewKeyCounts(src keyCountSource) *KeyCounts { return &KeyCounts{src: src} }

// Counts returns the device's one-time key counts and unused fallback key
// types; ok is false without a key service. The map and slice must not
// be changed.
func (k *KeyCounts) Counts(ctx context.Context, userID, deviceID string) (otk map[string]int, fallback []string, ok bool, err error) {
	if k.src == nil {
		return nil, nil, false, nil
	}
	otk, fallback, err = k.src.KeyCounts(ctx, userID, deviceID)
	return otk, fallback, err == nil, err
}
