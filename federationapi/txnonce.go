package federationapi

import (
	"context"
	"sync"

	"github.com/haven-chat/haven/internal/lru"
)

// txnFlights makes each inbound transaction (an origin and a transaction
// ID) processed once even when its sender sends it again while the first
// request is still being processed (a sender that timed out and retried,
// or two of its processes): the first request processes it, the others
// wait for its answer and return it. The zero value is ready.
type txnFlights struct {
	mu sync.Mutex
	m  map[string]*txnFlight
}

// txnFlight is a transaction being processed.
type txnFlight struct {
	done chan struct{}
	// answer is the first request's answer, set before done closes; nil
	// when it ended without one (its sender went away, its body was
	// refused): a waiting request then processes the transaction itself.
	answer []byte
	// waiters counts the requests waiting for it (read by tests).
	waiters int
}

// begin looks the transaction key up. An answer given before (kept in
// answers), or given by a concurrent request it waited for, is returned as
// prev. Otherwise the caller is the one processing the transaction and
// must call done once, with its answer (nil when it has none), which then
// answers the waiting requests and is kept in answers. A request that
// stops waiting (its context ends) gets the context's error.
func (f *txnFlights) begin(ctx context.Context, answers *lru.Cache[string, []byte], key string) (prev []byte, done func(answer []byte), err error) {
	for {
		f.mu.Lock()
		// Under the lock: a finished flight's answer is kept in answers
		// before the flight is removed, so one of the two is seen.
		if prev, ok := answers.Get(key); ok {
			f.mu.Unlock()
			return prev, nil, nil
		}
		fl := f.m[key]
		if fl == nil {
			if f.m == nil {
				f.m = make(map[string]*txnFlight)
			}
			fl = &txnFlight{done: make(chan struct{})}
			f.m[key] = fl
			f.mu.Unlock()
			return nil, func(answer []byte) {
				if answer != nil {
					answers.Put(key, answer)
				}
				f.mu.Lock()
				fl.answer = answer
				delete(f.m, key)
				f.mu.Unlock()
				close(fl.done)
			}, nil
		}
		fl.waiters++
		f.mu.Unlock()
		select {
		case <-fl.done:
		case <-ctx.Done():
			f.mu.Lock()
			fl.waiters--
			f.mu.Unlock()
			return nil, nil, ctx.Err()
		}
		if fl.answer != nil {
			return fl.answer, nil, nil
		}
	}
}

// waiting counts the requests waiting for the transaction key.
func (f *txnFlights) waiting(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl := f.m[key]; fl != nil {
		return fl.waiters
	}
	return 0
}
