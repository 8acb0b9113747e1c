package streams

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"sync"

	"github.com/haven-chat/haven/syncapi/synctoken"
)

// deviceListSource is the key service's device list changes (userapi/keys).
type deviceListSource interface {
	AllDeviceListChanges(ctx context.Context, fn func(userID string, pos int64)) error
}

// deviceListRooms is who shares rooms with whom (the notifier).
type deviceListRooms interface {
	CoMembers(user string) []string
	UserRooms(user string) []string
	SharesRoom(a, b string) bool
	JoinedMembers(user, room string) (bool, []string)
}

// DeviceLists is the device lists stream: the users whose devices or keys
// a user must fetch again (changed) or may forget (left). A change of a
// user's devices concerns everyone who shares a room with them; a join or
// a leave starts or stops sharing one. It remembers the latest device list
// position of each user and the latest membership event of each room, so
// that a sync reads the events table only for rooms with membership
// changes in its window.
type DeviceLists struct {
	db querier
	// mu is a leaf lock.
	mu sync.Mutex
	// devList[user] is the latest device list position of the user.
	devList map[string]int64
	// memberPos[room] is the latest membership event position of the room
	// seen since the start (startEvents); rooms not in it had none since.
	memberPos   map[string]int64
	startEvents int64
}

// NewDeviceLists reads membership events from db (the roomserver's events).
func NewDeviceLists(db querier) *DeviceLists {
	return &DeviceLists{db: db, devList: map[string]int64{}, memberPos: map[string]int64{}}
}

// Load seeds the device list positions from src (nil for none), at start,
// where the events stream is at eventsPos.
func (d *DeviceLists) Load(ctx context.Context, src deviceListSource, eventsPos int64) error {
	d.mu.Lock()
	d.startEvents = eventsPos
	d.mu.Unlock()
	if src == nil {
		return nil
	}
	return src.AllDeviceListChanges(ctx, func(u string, pos int64) { d.Changed(u, pos) })
}

// Changed notes a change of the user's devices or keys at pos (from the bus).
func (d *DeviceLists) Changed(userID string, pos int64) {
	d.mu.Lock()
	d.devList[userID] = max(d.devList[userID], pos)
	d.mu.Unlock()
}

// NoteMembership notes a membership event of a room at pos (before the
// notifier hears of it).
func (d *DeviceLists) NoteMembership(roomID string, pos int64) {
	d.mu.Lock()
	d.memberPos[roomID] = max(d.memberPos[roomID], pos)
	d.mu.Unlock()
}

// MembershipAfter tells whether any of the rooms may have had a
// membership event after pos (a room it has no note of may, when pos is
// before the start).
func (d *DeviceLists) MembershipAfter(rooms []string, pos int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range rooms {
		p, ok := d.memberPos[r]
		if ok && p > pos || !ok && pos < d.startEvents {
			return true
		}
	}
	return false
}

// Changes lists the users whose device lists the user must refetch
// (changed) or may forget (left) between two positions: users who share a
// room with the user (and the user) whose devices or keys changed, users
// who started sharing a room with the user, and users who no longer share
// any. With bounded, device list changes after to.DeviceLists are left for
// later. Both lists are sorted.
func (d *DeviceLists) Changes(ctx context.Context, rooms deviceListRooms, userID string, from, to synctoken.Pos, bounded bool) ([]string, []string, error) {
	changed, left := map[string]bool{}, map[string]bool{}
	if to.DeviceLists > from.DeviceLists {
		for _, u := range rooms.CoMembers(userID) {
			d.mu.Lock()
			p := d.devList[u]
			d.mu.Unlock()
			if p > from.DeviceLists && (!bounded || p <= to.DeviceLists) {
				changed[u] = true
			}
		}
	}
	if to.Events > from.Events {
		var rs []string
		all := rooms.UserRooms(userID)
		d.mu.Lock()
		for _, r := range all {
			p, ok := d.memberPos[r]
			if ok && p > from.Events || !ok && from.Events < d.startEvents {
				rs = append(rs, r)
			}
		}
		d.mu.Unlock()
		if err := d.membershipChanges(ctx, rooms, userID, rs, from.Events, to.Events, changed, left); err != nil {
			return nil, nil, err
		}
	}
	// Who is in both lists ends where the present puts them: sharing a
	// room now means changed, not sharing one means left.
	var outChanged, outLeft []string
	for u := range changed {
		if u == userID || rooms.SharesRoom(userID, u) {
			outChanged = append(outChanged, u)
		}
	}
	for u := range left {
		if u != userID && !rooms.SharesRoom(userID, u) {
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
func (d *DeviceLists) membershipChanges(ctx context.Context, rooms deviceListRooms, userID string, rs []string, from, to int64, changed, left map[string]bool) error {
	for start := 0; start < len(rs); start += 500 {
		batch := rs[start:min(start+500, len(rs))]
		rows, err := d.db.Query(ctx, `SELECT room_id, state_key, membership FROM events
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
			if joined, members := rooms.JoinedMembers(userID, room); joined {
				for _, u := range members {
					changed[u] = true
				}
			}
		}
		for room := range ownLeave {
			if joined, members := rooms.JoinedMembers(userID, room); !joined {
				for _, u := range members {
					left[u] = true
				}
			}
		}
	}
	return nil
}
