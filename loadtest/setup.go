package loadtest

// Setup of a load test: accounts (registered or logged in again), rooms
// (created or found by alias) and their members.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ltUser is one load-test account with the device it uses.
type ltUser struct {
	Index     int
	Localpart string
	mxSession
	Filter  string    // stored /sync filter ID
	Rooms   []int     // indices into the room list
	Created bool      // registered by this run (false: logged in to an existing account)
	client  *mxClient // the user's own server (two-site runs); nil: the run's one server
}

// on returns the client of the user's server: its own, else def.
func (u *ltUser) on(def *mxClient) *mxClient {
	if u.client != nil {
		return u.client
	}
	return def
}

// ltRoom is one load-test room.
type ltRoom struct {
	Index   int
	ID      string
	Alias   string
	Members []int       // user indices; Members[0] is the creator
	pos     map[int]int // user index -> position in Members
	Created bool        // created by this run (false: found by its alias)
}

// planRooms assigns users to rooms and describes the rule.
//
// With N >= R, user i joins room i mod R: every user is in exactly one room
// and rooms have floor(N/R) or ceil(N/R) members. With N < R (every room
// still needs senders and receivers), room r has users r mod N and
// (r+1) mod N, so rooms have 2 members and each user is in about 2R/N rooms.
func planRooms(users, rooms int) ([][]int, string) {
	if users <= 0 || rooms <= 0 {
		return nil, "no rooms"
	}
	members := make([][]int, rooms)
	if users >= rooms {
		for u := 0; u < users; u++ {
			members[u%rooms] = append(members[u%rooms], u)
		}
		lo, hi := users/rooms, (users+rooms-1)/rooms
		size := fmt.Sprintf("%d", lo)
		if hi != lo {
			size = fmt.Sprintf("%d or %d", lo, hi)
		}
		return members, fmt.Sprintf("each user joins exactly one room (user i -> room i mod %d); rooms have %s members", rooms, size)
	}
	for r := 0; r < rooms; r++ {
		members[r] = append(members[r], r%users)
		if users > 1 {
			members[r] = append(members[r], (r+1)%users)
		}
	}
	per := float64(rooms*min(users, 2)) / float64(users)
	return members, fmt.Sprintf("fewer users than rooms: room r has users r mod %d and (r+1) mod %d (%d member(s) each); each user is in about %.1f rooms",
		users, users, min(users, 2), per)
}

// forEach runs fn(ctx, i) for every i in [0, n) on at most workers
// goroutines. It stops handing out work at the first error and returns it.
func forEach(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(max(workers, 1), n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		}()
	}
feed:
	for i := 0; i < n && ctx.Err() == nil; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// ltSetup creates or reuses accounts and rooms.
type ltSetup struct {
	c       *mxClient
	opts    ltOptions
	logf    func(format string, args ...any)
	workers int
}

func (s *ltSetup) password() string { return "lt-password-" + s.opts.Prefix }

// ensureAccount registers localpart, or logs in if it exists already.
func (s *ltSetup) ensureAccount(ctx context.Context, localpart string) (mxSession, bool, error) {
	var sess mxSession
	err := withRetry(ctx, func(ctx context.Context) error {
		var err error
		if s.opts.SharedSecret != "" {
			sess, err = s.c.registerSharedSecret(ctx, s.opts.SharedSecret, localpart, s.password())
		} else {
			sess, err = s.c.registerDummy(ctx, localpart, s.password())
		}
		return err
	})
	if err == nil {
		return sess, true, nil
	}
	if !hasErrCode(err, "M_USER_IN_USE") {
		return sess, false, err
	}
	err = withRetry(ctx, func(ctx context.Context) error {
		var err error
		sess, err = s.c.login(ctx, localpart, s.password())
		return err
	})
	return sess, false, err
}

// newUser makes one account ready: a device and a stored filter.
func (s *ltSetup) newUser(ctx context.Context, index int, localpart string, filter any) (*ltUser, error) {
	sess, created, err := s.ensureAccount(ctx, localpart)
	if err != nil {
		return nil, err
	}
	u := &ltUser{Index: index, Localpart: localpart, mxSession: sess, Created: created}
	err = withRetry(ctx, func(ctx context.Context) error {
		var err error
		u.Filter, err = s.c.putFilter(ctx, sess, filter)
		return err
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}

// users registers (or logs in) opts.Users accounts.
func (s *ltSetup) users(ctx context.Context, rep *ltSetupReport) ([]*ltUser, error) {
	users := make([]*ltUser, s.opts.Users)
	filter := loadFilter(s.opts.TimelineLimit)
	var done atomic.Int64
	start := time.Now()
	err := forEach(ctx, len(users), s.workers, func(ctx context.Context, i int) error {
		u, err := s.newUser(ctx, i, fmt.Sprintf("%s-u%d", s.opts.Prefix, i), filter)
		if err != nil {
			return err
		}
		users[i] = u
		if n := done.Add(1); n%1000 == 0 {
			s.logf("  %d/%d accounts ready", n, len(users))
		}
		return nil
	})
	rep.AccountsSeconds = time.Since(start).Seconds()
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	for _, u := range users {
		if u.Created {
			rep.Registered++
		} else {
			rep.LoggedIn++
		}
	}
	return users, nil
}

// loadFilter is the /sync filter of the load users: a small timeline and
// lazy-loaded members.
func loadFilter(timelineLimit int) map[string]any {
	return map[string]any{"room": map[string]any{
		"timeline": map[string]any{"limit": timelineLimit},
		"state":    map[string]any{"lazy_load_members": true},
	}}
}

// ensureRoom creates a private_chat room with the given alias localpart, or
// finds the one a previous run created.
func (s *ltSetup) ensureRoom(ctx context.Context, creator *ltUser, aliasLocal, name string) (string, bool, error) {
	var id string
	err := withRetry(ctx, func(ctx context.Context) error {
		var err error
		id, err = s.c.createRoom(ctx, creator.AccessToken, map[string]any{
			"preset": "private_chat", "room_alias_name": aliasLocal, "name": name,
		})
		return err
	})
	if err == nil {
		return id, true, nil
	}
	if !hasErrCode(err, "M_ROOM_IN_USE") {
		return "", false, err
	}
	alias := "#" + aliasLocal + ":" + serverNameOf(creator.UserID)
	err = withRetry(ctx, func(ctx context.Context) error {
		var err error
		id, err = s.c.resolveAlias(ctx, creator.AccessToken, alias)
		return err
	})
	return id, false, err
}

// addMember has inviter invite u (if u is not in the room yet) and u join.
func (s *ltSetup) addMember(ctx context.Context, roomID string, inviter, u *ltUser) error {
	err := withRetry(ctx, func(ctx context.Context) error { return s.c.invite(ctx, inviter.AccessToken, roomID, u.UserID) })
	// A member joined by an earlier run cannot be invited again (403); its
	// join below is a no-op then. Any other refusal makes the join fail.
	if err != nil && !hasErrCode(err, "M_FORBIDDEN") {
		return err
	}
	if jerr := withRetry(ctx, func(ctx context.Context) error { return s.c.join(ctx, u.AccessToken, roomID) }); jerr != nil {
		return errors.Join(jerr, err)
	}
	return nil
}

// rooms creates (or finds) the rooms of the plan and puts their members in.
func (s *ltSetup) rooms(ctx context.Context, users []*ltUser, plan [][]int, rep *ltSetupReport) ([]*ltRoom, error) {
	rooms := make([]*ltRoom, len(plan))
	var done atomic.Int64
	start := time.Now()
	err := forEach(ctx, len(plan), s.workers, func(ctx context.Context, r int) error {
		room := &ltRoom{Index: r, Members: plan[r], pos: make(map[int]int, len(plan[r]))}
		for p, u := range plan[r] {
			room.pos[u] = p
		}
		creator := users[plan[r][0]]
		room.Alias = fmt.Sprintf("%s-room-%d", s.opts.Prefix, r)
		id, created, err := s.ensureRoom(ctx, creator, room.Alias, fmt.Sprintf("load test room %d", r))
		if err != nil {
			return fmt.Errorf("room %d: %w", r, err)
		}
		room.ID, room.Created = id, created
		for _, m := range plan[r][1:] {
			if err := s.addMember(ctx, id, creator, users[m]); err != nil {
				return fmt.Errorf("room %d member %s: %w", r, users[m].UserID, err)
			}
		}
		rooms[r] = room
		if n := done.Add(1); n%200 == 0 {
			s.logf("  %d/%d rooms ready", n, len(plan))
		}
		return nil
	})
	rep.RoomsSeconds = time.Since(start).Seconds()
	if err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
	}
	for _, room := range rooms {
		if room.Created {
			rep.RoomsCreated++
		} else {
			rep.RoomsReused++
		}
		for _, m := range room.Members {
			users[m].Rooms = append(users[m].Rooms, room.Index)
		}
		rep.RoomSizeMin = minPositive(rep.RoomSizeMin, len(room.Members))
		rep.RoomSizeMax = max(rep.RoomSizeMax, len(room.Members))
	}
	return rooms, nil
}

func minPositive(cur, v int) int {
	if cur == 0 || v < cur {
		return v
	}
	return cur
}
