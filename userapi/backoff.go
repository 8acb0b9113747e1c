package userapi

import (
	"sync"
	"time"
)

// backoff slows down password guessing against one account, on top of the
// per-address rate limit of the login route. After freeAttempts failures in
// a row each further attempt must wait twice as long as the previous one
// (1 s, 2 s, 4 s, ... up to maxDelay). A success resets the count; a count
// is forgotten forgetAfter after its last failure. Keys are user IDs whether
// or not the account exists, so the lockout reveals nothing.
type backoff struct {
	mu    sync.Mutex
	now   func() time.Time
	m     map[string]*failures
	sweep time.Time
}

type failures struct {
	n     int
	last  time.Time
	until time.Time
}

const (
	freeAttempts = 3
	maxDelay     = 5 * time.Minute
	forgetAfter  = 15 * time.Minute
	maxTracked   = 100000
)

func newBackoff(now func() time.Time) *backoff {
	return &backoff{now: now, m: make(map[string]*failures)}
}

// wait returns how long the key must wait before its next attempt (0: go ahead).
func (b *backoff) wait(key string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.m[key]
	if f == nil {
		return 0
	}
	now := b.now()
	if now.Sub(f.last) > forgetAfter {
		delete(b.m, key)
		return 0
	}
	if d := f.until.Sub(now); d > 0 {
		return d
	}
	return 0
}

// fail records a failed attempt.
func (b *backoff) fail(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.sweepLocked(now)
	f := b.m[key]
	if f == nil || now.Sub(f.last) > forgetAfter {
		f = &failures{}
		b.m[key] = f
	}
	f.n++
	f.last = now
	if f.n >= freeAttempts {
		d := time.Second << min(f.n-freeAttempts, 20)
		if d > maxDelay {
			d = maxDelay
		}
		f.until = now.Add(d)
	}
}

// reset forgets the key's failures after a success.
func (b *backoff) reset(key string) {
	b.mu.Lock()
	delete(b.m, key)
	b.mu.Unlock()
}

func (b *backoff) sweepLocked(now time.Time) {
	if len(b.m) < maxTracked && now.Sub(b.sweep) < time.Minute {
		return
	}
	b.sweep = now
	for k, f := range b.m {
		if now.Sub(f.last) > forgetAfter {
			delete(b.m, k)
		}
	}
	// Still full: an attacker is cycling names. Drop arbitrary entries so
	// memory stays bounded; the per-address rate limit still applies.
	for k := range b.m {
		if len(b.m) < maxTracked {
			break
		}
		delete(b.m, k)
	}
}
