package loadtest

// The join scenario of loadtest-federation: a room on site A with
// --join-members joined local members; a user of site B joins it through A
// (the cold join: B is not in the room and imports its state and auth
// chain), then --join-warm more users of B (B is in the room by then).

import (
	"context"
	"fmt"
	"time"
)

// fedJoinReport is what the join scenario measured.
type fedJoinReport struct {
	Members         int       `json:"members"`
	AccountsSeconds float64   `json:"accounts_seconds"`
	RoomSeconds     []float64 `json:"room_build_seconds"`
	// Per room: the first /join of a B user, and what B counts then.
	Cold          []float64 `json:"cold_join_seconds"`
	MembersSeenB  []int     `json:"members_seen_by_b"`
	Warm          []float64 `json:"warm_join_seconds"`
	ColdMax       float64   `json:"cold_join_max_seconds"`
	ColdSyncDelay []float64 `json:"cold_join_to_sync_seconds"`
}

func (r *fedRun) join(ctx context.Context) error {
	o := r.o
	r.logf("join: rooms of %d members on A, joined from B (%d room(s))", o.JoinMembers, o.JoinRooms)
	if err := r.startSites(ctx, "join"); err != nil {
		return err
	}
	defer r.stopSites()
	j := &fedJoinReport{Members: o.JoinMembers}
	r.rep.Join = j
	t := time.Now()
	names := make([]string, o.JoinMembers)
	idx := make([]int, o.JoinMembers)
	for i := range names {
		names[i], idx[i] = fmt.Sprintf("%s-j%d", o.Prefix, i), i
	}
	members, err := r.newUsers(ctx, r.a, names, idx)
	if err != nil {
		return err
	}
	bNames := make([]string, 1+o.JoinWarm)
	bIdx := make([]int, len(bNames))
	for i := range bNames {
		bNames[i], bIdx[i] = fmt.Sprintf("%s-b%d", o.Prefix, i), o.JoinMembers+i
	}
	joiners, err := r.newUsers(ctx, r.b, bNames, bIdx)
	if err != nil {
		return err
	}
	j.AccountsSeconds = time.Since(t).Seconds()
	r.logf("%d accounts on A and %d on B in %.1f s", len(members), len(joiners), j.AccountsSeconds)
	for room := 0; room < o.JoinRooms; room++ {
		t := time.Now()
		creator := members[0]
		var roomID string
		err := withRetry(ctx, func(ctx context.Context) error {
			var err error
			roomID, err = r.a.c.createRoom(ctx, creator.AccessToken, map[string]any{"preset": "public_chat", "name": fmt.Sprintf("big room %d", room)})
			return err
		})
		if err != nil {
			return fmt.Errorf("big room: %w", err)
		}
		err = forEach(ctx, len(members)-1, o.Concurrency, func(ctx context.Context, i int) error {
			u := members[i+1]
			return withRetry(ctx, func(ctx context.Context) error { return r.a.c.join(ctx, u.AccessToken, roomID) })
		})
		if err != nil {
			return fmt.Errorf("big room %d: local joins: %w", room, err)
		}
		n, err := r.a.c.joinedMembers(ctx, creator.AccessToken, roomID)
		if err != nil || n != len(members) {
			return fmt.Errorf("big room %d: A counts %d joined members, want %d (%v)", room, n, len(members), err)
		}
		j.RoomSeconds = append(j.RoomSeconds, time.Since(t).Seconds())
		r.logf("room %d: %d members in %.1f s; B joins", room, n, time.Since(t).Seconds())

		// The joiner's sync position before the join, to time the room's arrival in its /sync.
		cold := joiners[0]
		pre, _, err := cold.client.sync(ctx, cold.AccessToken, "", cold.Filter, 0)
		if err != nil {
			return fmt.Errorf("sync of %s: %w", cold.UserID, err)
		}
		profDone := r.startProfiles(ctx, fmt.Sprintf("join-%d", room), o.ProfileSeconds)
		t = time.Now()
		err = cold.client.joinVia(ctx, cold.AccessToken, roomID, r.a.name)
		d := time.Since(t).Seconds()
		if err != nil {
			profDone()
			return fmt.Errorf("cold join of room %d: %w", room, err)
		}
		j.Cold = append(j.Cold, d)
		j.ColdMax = max(j.ColdMax, d)
		since := pre.NextBatch
		for ctx.Err() == nil && time.Since(t) < time.Minute {
			resp, _, err := cold.client.sync(ctx, cold.AccessToken, since, cold.Filter, 5*time.Second)
			if err != nil {
				return fmt.Errorf("sync after the join: %w", err)
			}
			since = resp.NextBatch
			if _, ok := resp.Rooms.Join[roomID]; ok {
				j.ColdSyncDelay = append(j.ColdSyncDelay, time.Since(t).Seconds()-d)
				break
			}
		}
		seen, err := cold.client.joinedMembers(ctx, cold.AccessToken, roomID)
		if err != nil {
			return fmt.Errorf("joined members on B: %w", err)
		}
		j.MembersSeenB = append(j.MembersSeenB, seen)
		r.logf("cold join of room %d: %.3f s; B counts %d joined members", room, d, seen)
		for _, u := range joiners[1:] {
			t := time.Now()
			if err := u.client.joinVia(ctx, u.AccessToken, roomID, r.a.name); err != nil {
				profDone()
				return fmt.Errorf("warm join of room %d: %w", room, err)
			}
			j.Warm = append(j.Warm, time.Since(t).Seconds())
		}
		profDone()
	}
	got := fmt.Sprintf("max %.3f s of %d cold join(s)", j.ColdMax, len(j.Cold))
	r.rep.target("3. join of a remote 1,000-member room", "<= 2 s", got, j.ColdMax <= 2 && len(j.Cold) > 0)
	if o.JoinMembers != 1000 {
		r.rep.note("the room had %d members, not the target's 1,000", o.JoinMembers)
	}
	return nil
}

func (j *fedJoinReport) write(p func(string, ...any)) {
	p("Join: rooms of %d members on A (accounts %.1f s; rooms built in %v s)", j.Members, j.AccountsSeconds, fmtSecs(j.RoomSeconds))
	p("  cold /join from B (B not in the room): %v s; the room in the joiner's /sync %v s after the /join answered; B then counts %v joined members",
		fmtSecs(j.Cold), fmtSecs(j.ColdSyncDelay), j.MembersSeenB)
	p("  warm /join from B (B in the room already): %v s", fmtSecs(j.Warm))
}

func fmtSecs(v []float64) string {
	s := "["
	for i, x := range v {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.3f", x)
	}
	return s + "]"
}
