package syncapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
)

// Bus topics of the key service (userapi/keys) that the sync engine follows.
const (
	TopicToDevice    = "to_device"
	TopicDeviceLists = "device_lists"
)

// ToDeviceLimit is how many to-device messages one /sync response carries
// at most; the rest come in the next ones.
const ToDeviceLimit = 100

// KeySource is what the sync engine asks the key service (userapi/keys).
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

// keyState is what the sync engine remembers of the key streams, so that a
// /sync asks the database only when there is something to read or delete.
// mu is a leaf lock: never held while taking Notifier.mu or the reverse.
type keyState struct {
	mu sync.Mutex
	// devList[user] is the latest device list position of the user.
	devList map[string]int64
	// queued[device] is the latest to-device position queued for the
	// device; pending[device] the lowest position that may still be stored
	// (delivered or not). Both are dropped once the device acknowledged all.
	queued  map[devKey]int64
	pending map[devKey]int64
	// memberPos[room] is the latest membership event position of the room
	// seen since the start (startEvents); rooms not in it had none since.
	memberPos   map[string]int64
	startEvents int64
}

func newKeyState() *keyState {
	return &keyState{devList: map[string]int64{}, queued: map[devKey]int64{}, pending: map[devKey]int64{}, memberPos: map[string]int64{}}
}

// loadKeys seeds the key state from the database at start and returns the
// to-device and device list positions to start from.
func (s *Service) loadKeys(ctx context.Context, eventsPos int64) (toDevice, deviceLists int64, err error) {
	k := s.keyState
	k.mu.Lock()
	k.startEvents = eventsPos
	k.mu.Unlock()
	src := s.opts.Keys
	if src == nil {
		return 0, 0, nil
	}
	toDevice, deviceLists = src.ToDevicePosition(), src.DeviceListPosition()
	err = src.ToDeviceBacklog(ctx, func(u, d string, lo, hi int64) {
		k.mu.Lock()
		dk := devKey{u, d}
		k.queued[dk] = max(k.queued[dk], hi)
		if p, ok := k.pending[dk]; !ok || lo < p {
			k.pending[dk] = lo
		}
		k.mu.Unlock()
	})
	if err != nil {
		return 0, 0, err
	}
	err = src.AllDeviceListChanges(ctx, func(u string, pos int64) {
		k.mu.Lock()
		k.devList[u] = max(k.devList[u], pos)
		k.mu.Unlock()
	})
	return toDevice, deviceLists, err
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
	k := s.keyState
	for _, t := range n.Targets {
		dk := devKey{t.UserID, t.DeviceID}
		k.mu.Lock()
		k.queued[dk] = max(k.queued[dk], t.Pos)
		if _, ok := k.pending[dk]; !ok {
			k.pending[dk] = t.Pos
		}
		k.mu.Unlock()
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
	k := s.keyState
	k.mu.Lock()
	k.devList[n.UserID] = max(k.devList[n.UserID], n.Pos)
	k.mu.Unlock()
	s.n.OnDeviceListChange(n.UserID, n.Pos)
}

// noteMembership records a membership event of a room (called before the
// Notifier hears of the event).
func (s *Service) noteMembership(roomID string, pos int64) {
	k := s.keyState
	k.mu.Lock()
	k.memberPos[roomID] = max(k.memberPos[roomID], pos)
	k.mu.Unlock()
}

// ackToDevice deletes the device's to-device messages up to since: a sync
// with that token means the device has them. It costs nothing when there
// is nothing to delete.
func (s *Service) ackToDevice(ctx context.Context, userID, deviceID string, since int64) {
	src := s.opts.Keys
	if src == nil || since <= 0 {
		return
	}
	k, dk := s.keyState, devKey{userID, deviceID}
	k.mu.Lock()
	p, ok := k.pending[dk]
	k.mu.Unlock()
	if !ok || since < p {
		return
	}
	if err := src.AckToDevice(ctx, userID, deviceID, since); err != nil {
		logging.From(ctx).WithError(err).WithFields(logrus.Fields{"user_id": userID, "device_id": deviceID}).Warn("cannot delete delivered to-device messages")
		return
	}
	k.mu.Lock()
	if k.queued[dk] > since {
		if k.pending[dk] <= since {
			k.pending[dk] = since + 1
		}
	} else {
		delete(k.pending, dk)
		delete(k.queued, dk)
	}
	k.mu.Unlock()
}

// keysSection adds to a response the device's to-device messages, the
// device list changes (incremental syncs) and the key counts. It may lower
// the to-device position of next_batch when more messages wait than one
// response carries.
func (s *Service) keysSection(ctx context.Context, req SyncRequest, since *Pos, upto Pos, resp *Response) error {
	src := s.opts.Keys
	if src == nil {
		return nil
	}
	after := int64(0)
	if since != nil {
		after = since.ToDevice
	}
	k, dk := s.keyState, devKey{req.UserID, req.DeviceID}
	k.mu.Lock()
	queued := k.queued[dk]
	k.mu.Unlock()
	if upto.ToDevice > after && queued > after {
		evs, last, err := src.ToDeviceMessages(ctx, req.UserID, req.DeviceID, after, upto.ToDevice, ToDeviceLimit)
		if err != nil {
			return err
		}
		resp.ToDevice.Events = append(resp.ToDevice.Events, evs...)
		if len(evs) == ToDeviceLimit && last < upto.ToDevice {
			upto.ToDevice = last
			resp.NextBatch = upto.String()
		}
	}
	if since != nil {
		changed, left, err := s.deviceListChanges(ctx, req.UserID, *since, upto, true)
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
	src := s.opts.Keys
	if src == nil {
		return nil
	}
	counts, fallback, err := src.KeyCounts(ctx, req.UserID, req.DeviceID)
	if err != nil {
		return err
	}
	for alg, n := range counts {
		resp.OTKCounts[alg] = n
	}
	resp.FallbackKeyTypes = append(resp.FallbackKeyTypes[:0], fallback...)
	return nil
}

// userRooms lists the rooms the user has any membership of.
func (n *Notifier) userRooms(user string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.rooms[user]))
	for r := range n.rooms[user] {
		out = append(out, r)
	}
	return out
}

// joinedNow tells whether the user is joined to the room and returns the
// room's joined members.
func (n *Notifier) joinedNow(user, room string) (bool, []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, joined := n.members[room][user]
	out := make([]string, 0, len(n.members[room]))
	for u := range n.members[room] {
		out = append(out, u)
	}
	return joined, out
}

// deviceListChanges lists the users whose device lists the user must
// refetch (changed) or may forget (left) between two positions: users who
// share a room with the user (and the user) whose devices or keys changed,
// users who started sharing a room with the user, and users who no longer
// share any. With bounded, device list changes after to.DeviceLists are
// left for later.
func (s *Service) deviceListChanges(ctx context.Context, userID string, from, to Pos, bounded bool) ([]string, []string, error) {
	changed, left := map[string]bool{}, map[string]bool{}
	k := s.keyState
	if to.DeviceLists > from.DeviceLists {
		for _, u := range s.n.CoMembers(userID) {
			k.mu.Lock()
			p := k.devList[u]
			k.mu.Unlock()
			if p > from.DeviceLists && (!bounded || p <= to.DeviceLists) {
				changed[u] = true
			}
		}
	}
	if to.Events > from.Events {
		var rooms []string
		all := s.n.userRooms(userID)
		k.mu.Lock()
		for _, r := range all {
			p, ok := k.memberPos[r]
			if ok && p > from.Events || !ok && from.Events < k.startEvents {
				rooms = append(rooms, r)
			}
		}
		k.mu.Unlock()
		if err := s.membershipChanges(ctx, userID, rooms, from.Events, to.Events, changed, left); err != nil {
			return nil, nil, err
		}
	}
	// Who is in both lists ends where the present puts them: sharing a
	// room now means changed, not sharing one means left.
	var outChanged, outLeft []string
	for u := range changed {
		if u == userID || s.n.SharesRoom(userID, u) {
			outChanged = append(outChanged, u)
		}
	}
	for u := range left {
		if u != userID && !s.n.SharesRoom(userID, u) {
			outLeft = append(outLeft, u)
		}
	}
	sort.Strings(outChanged)
	sort.Strings(outLeft)
	return outChanged, outLeft, nil
}

// membershipChanges reads the membership events of the rooms in the window
// and notes who may have started (changed) or stopped (left) sharing a room
// with the user.
func (s *Service) membershipChanges(ctx context.Context, userID string, rooms []string, from, to int64, changed, left map[string]bool) error {
	for start := 0; start < len(rooms); start += 500 {
		batch := rooms[start:min(start+500, len(rooms))]
		rows, err := s.db.Query(ctx, `SELECT room_id, state_key, membership FROM events
WHERE room_id IN ($1) AND type = 'm.room.member' AND pos > $2 AND pos <= $3 ORDER BY pos`, batch, from, to)
		if err != nil {
			return fmt.Errorf("membership changes of %s: %w", userID, err)
		}
		ownJoin, ownLeave := map[string]bool{}, map[string]bool{}
		for rows.Next() {
			var room string
			var target, m sql.NullString
			if err := rows.Scan(&room, &target, &m); err != nil {
				rows.Close()
				return fmt.Errorf("membership changes of %s: %w", userID, err)
			}
			switch {
			case target.String == userID && m.String == "join":
				ownJoin[room] = true
			case target.String == userID && (m.String == "leave" || m.String == "ban"):
				ownLeave[room] = true
			case m.String == "join":
				changed[target.String] = true
			case m.String == "leave" || m.String == "ban":
				left[target.String] = true
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("membership changes of %s: %w", userID, err)
		}
		for room := range ownJoin {
			if joined, members := s.n.joinedNow(userID, room); joined {
				for _, u := range members {
					changed[u] = true
				}
			}
		}
		for room := range ownLeave {
			if joined, members := s.n.joinedNow(userID, room); !joined {
				for _, u := range members {
					left[u] = true
				}
			}
		}
	}
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
	changed, left, err = s.deviceListChanges(ctx, userID, f, t, false)
	if changed == nil {
		changed = []string{}
	}
	if left == nil {
		left = []string{}
	}
	return changed, left, err
}
