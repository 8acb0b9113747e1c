package syncapi

import (
	"context"
	"encoding/json"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/syncapi/streams"
)

// Bus topics of the key service (userapi/keys) that the sync engine follows.
const (
	TopicToDevice    = "to_device"
	TopicDeviceLists = "device_lists"
)

// ToDeviceLimit is how many to-device messages one /sync response carries
// at most; the rest come in the next ones.
const ToDeviceLimit = streams.ToDeviceLimit

// KeySource is what the sync engine asks the key service (userapi/keys):
// the to-device (streams.ToDevice), device list (streams.DeviceLists) and
// key count (streams.KeyCounts) readers each use their part of it.
// KeyCounts answers from memory when it can and its results must not be
// changed.
type KeySource interface {
	ToDevicePosition() int64
	DeviceListPosition() int64
	ToDeviceMessages(ctx context.Context, userID, deviceID string, after, upto int64, limit int) ([]json.RawMessage, int64, error)
	AckToDevice(ctx context.Context, userID, deviceID string, upto int64) error
	ToDeviceBacklog(ctx context.Context, fn func(userID, deviceID string, lowest, highest int64)) error
	AllDeviceListChanges(ctx context.Context, fn func(userID string, pos int64)) error
	KeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error)
}

// loadKeys seeds the to-device and device list streams from the database
// at start and returns their positions to start from.
func (s *Service) loadKeys(ctx context.Context, eventsPos int64) (toDevice, deviceLists int64, err error) {
	src := s.opts.Keys
	if src == nil {
		return 0, 0, s.deviceLists.Load(ctx, nil, eventsPos)
	}
	toDevice, deviceLists = src.ToDevicePosition(), src.DeviceListPosition()
	if err := s.toDevice.Load(ctx); err != nil {
		return 0, 0, err
	}
	return toDevice, deviceLists, s.deviceLists.Load(ctx, src, eventsPos)
}

func (s *Service) onToDevice(data []byte) {
	var n struct {
		Targets []struct {
			UserID   string `json:"user_id"`
			DeviceID string `json:"device_id"`
			Pos      int64  `json:"pos"`
		} `json:"targets"`
	}
	if err := json.Unmarshal(data, &n); err != nil {
		logging.From(context.Background()).WithError(err).Error("bad to-device notice")
		return
	}
	for _, t := range n.Targets {
		s.toDevice.Queued(t.UserID, t.DeviceID, t.Pos)
		s.n.OnToDevice(t.UserID, t.DeviceID, t.Pos)
	}
}

func (s *Service) onDeviceList(data []byte) {
	var n struct {
		UserID string `json:"user_id"`
		Pos    int64  `json:"pos"`
	}
	if err := json.Unmarshal(data, &n); err != nil {
		logging.From(context.Background()).WithError(err).Error("bad device list notice")
		return
	}
	s.deviceLists.Changed(n.UserID, n.Pos)
	s.n.OnDeviceListChange(n.UserID, n.Pos)
}

// keysSection adds to a response the device's to-device messages, the
// device list changes (incremental syncs) and the key counts. It may lower
// the to-device position of next_batch when more messages wait than one
// response carries.
func (s *Service) keysSection(ctx context.Context, req SyncRequest, since *Pos, upto Pos, resp *Response) error {
	if s.opts.Keys == nil {
		return nil
	}
	after := int64(0)
	if since != nil {
		after = since.ToDevice
	}
	evs, reached, err := s.toDevice.Messages(ctx, req.UserID, req.DeviceID, after, upto.ToDevice)
	if err != nil {
		return err
	}
	resp.ToDevice.Events = append(resp.ToDevice.Events, evs...)
	if reached < upto.ToDevice {
		upto.ToDevice = reached
		resp.NextBatch = upto.String()
	}
	if since != nil {
		changed, left, err := s.deviceLists.Changes(ctx, s.n, req.UserID, *since, upto, true)
		if err != nil {
			return err
		}
		resp.DeviceLists.Changed = append(resp.DeviceLists.Changed, changed...)
		resp.DeviceLists.Left = append(resp.DeviceLists.Left, left...)
	}
	return s.keyCounts(ctx, req, resp)
}

// keyCounts sets the device's one-time key counts and unused fallback key
// types: every response carries them.
func (s *Service) keyCounts(ctx context.Context, req SyncRequest, resp *Response) error {
	counts, fallback, ok, err := s.keyCountsStream.Counts(ctx, req.UserID, req.DeviceID)
	if err != nil || !ok {
		return err
	}
	for alg, n := range counts {
		resp.OTKCounts[alg] = n
	}
	resp.FallbackKeyTypes = append(resp.FallbackKeyTypes[:0], fallback...)
	return nil
}

// KeyChanges answers /keys/changes: the users whose device lists changed
// between two sync tokens (and who share a room with the user), and those
// who no longer share one. An empty to means now.
func (s *Service) KeyChanges(ctx context.Context, userID, from, to string) (changed, left []string, err error) {
	f, err := ParsePos(from)
	if err != nil {
		return nil, nil, merr.InvalidParam("from is not a sync token")
	}
	if s.lostTime(f) { // handed out before a restore and lost with it: start over
		f = Pos{}
	}
	s.CatchUp(ctx)
	t := s.n.Current()
	if to != "" {
		p, err := ParsePos(to)
		if err != nil {
			return nil, nil, merr.InvalidParam("to is not a sync token")
		}
		t = p.Min(t)
	}
	changed, left, err = s.deviceLists.Changes(ctx, s.n, userID, f, t, false)
	if changed == nil {
		changed = []string{}
	}
	if left == nil {
		left = []string{}
	}
	return changed, left, err
}
