package loadtest

// The initial /sync measurement: one more user joins K rooms (the load
// test's rooms first, then rooms of its own with a few messages each), and
// its initial /sync (no since, lazy-loaded members, timeline limit 20) is
// timed again and again.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// initialSyncFilter is the filter of the measured initial syncs.
func initialSyncFilter() map[string]any {
	return map[string]any{"room": map[string]any{
		"state":    map[string]any{"lazy_load_members": true},
		"timeline": map[string]any{"limit": 20},
	}}
}

// ltOwnRoomMessages is how many messages a room of the initial-sync user's
// own gets when it is created.
const ltOwnRoomMessages = 5

func (e *ltEnv) initialSync(ctx context.Context, users []*ltUser, rooms []*ltRoom) (*ltInitialSyncReport, error) {
	k := e.opts.InitialSyncRooms
	filter := initialSyncFilter()
	filterJSON, _ := json.Marshal(filter)
	u, err := e.setup.newUser(ctx, -1, e.opts.Prefix+"-isync", filter)
	if err != nil {
		return nil, fmt.Errorf("initial-sync user: %w", err)
	}
	shared := min(k, len(rooms))
	rep := &ltInitialSyncReport{User: u.UserID, Rooms: k, RoomsJoinedLoad: shared, RoomsOwn: k - shared,
		Filter: string(filterJSON), Repeats: e.opts.InitialSyncRepeats}
	e.logf("initial sync: %s joins %d load rooms and %d rooms of its own", u.UserID, shared, k-shared)
	err = forEach(ctx, shared, e.opts.Concurrency, func(ctx context.Context, i int) error {
		r := rooms[i]
		return e.setup.addMember(ctx, r.ID, users[r.Members[0]], u)
	})
	if err != nil {
		return rep, fmt.Errorf("join load rooms: %w", err)
	}
	err = forEach(ctx, k-shared, e.opts.Concurrency, func(ctx context.Context, j int) error {
		return e.ownRoom(ctx, u, j)
	})
	if err != nil {
		return rep, fmt.Errorf("own rooms: %w", err)
	}
	d, size, n, err := e.timeInitialSync(ctx, u)
	if err != nil {
		return rep, err
	}
	rep.FirstMS, rep.SizeMinBytes, rep.SizeMaxBytes, rep.RoomsInResponse = ms(d), size, size, n
	lat := make([]time.Duration, 0, rep.Repeats)
	for i := 0; i < rep.Repeats; i++ {
		d, size, n, err := e.timeInitialSync(ctx, u)
		if err != nil {
			return rep, err
		}
		lat = append(lat, d)
		rep.SizeMinBytes, rep.SizeMaxBytes = min(rep.SizeMinBytes, size), max(rep.SizeMaxBytes, size)
		rep.RoomsInResponse = n
	}
	rep.Latency = summarize(lat)
	return rep, nil
}

// ownRoom creates (or finds) the initial-sync user's j-th own room; a new
// one gets a few messages.
func (e *ltEnv) ownRoom(ctx context.Context, u *ltUser, j int) error {
	id, created, err := e.setup.ensureRoom(ctx, u, fmt.Sprintf("%s-isync-%d", e.opts.Prefix, j), fmt.Sprintf("initial sync room %d", j))
	if err != nil || !created {
		return err
	}
	for m := 0; m < ltOwnRoomMessages; m++ {
		content := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("initial sync room %d message %d", j, m)}
		txn := fmt.Sprintf("lt-isync-%s-%d-%d", e.runID, j, m)
		if err := withRetry(ctx, func(ctx context.Context) error { return e.c.send(ctx, u.AccessToken, id, txn, content) }); err != nil {
			return err
		}
	}
	return nil
}

// timeInitialSync runs one initial /sync and returns its latency (to the
// answer's last byte, before the load test decodes it), its size and the
// number of joined rooms in it.
func (e *ltEnv) timeInitialSync(ctx context.Context, u *ltUser) (time.Duration, int, int, error) {
	start := time.Now()
	data, err := e.c.raw(ctx, "initial sync", "GET", syncPath("", u.Filter, 0), u.AccessToken, nil)
	d := time.Since(start)
	if err != nil {
		return d, len(data), 0, fmt.Errorf("initial sync of %s: %w", u.UserID, err)
	}
	var resp ltSyncResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return d, len(data), 0, fmt.Errorf("initial sync of %s: decode: %w", u.UserID, err)
	}
	return d, len(data), len(resp.Rooms.Join), nil
}
