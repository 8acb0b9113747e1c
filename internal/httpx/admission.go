package httpx

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"
)

// admission paces the connections that leave the epoll set. When every
// client reconnects at once, thousands of connections become readable
// within a second; handed to the HTTP server together, each would hold a
// goroutine, its stack and 8 KiB of buffers while the cores work through
// them. Instead a connection gets a slot before it goes to the server, and
// gives it back when its request is done (the connection goes idle, is
// taken over or closes) or when the request starts waiting (a /sync with
// nothing to say yet, see ReleaseSlot). The others stay in the set's queue,
// where they cost nothing but their descriptor.
//
// Slots must never stall the server: when all are taken, a slot held for
// maxDelay is retired (its request goes on, no longer counted). So at
// least `slots` connections are admitted per maxDelay whatever slow
// requests or clients do, while during a burst, when slots come back every
// millisecond, connections wait for them however long the queue.
type admission struct {
	slots    int // how many connections may hold a slot
	maxDelay time.Duration
	deliver  func(net.Conn)
	closed   <-chan struct{}

	mu      sync.Mutex
	queue   []net.Conn
	wake    chan struct{}          // a connection was queued
	freed   chan struct{}          // a slot was given back
	held    map[net.Conn]time.Time // the slots taken, and when
	stopped bool                   // run has returned: enqueue closes
}

// admissionSlots is how many connections from the set may have a request
// with the server at once.
func admissionSlots() int { return max(64, 16*runtime.GOMAXPROCS(0)) }

// admissionDelay is how long a connection may hold a slot while others
// wait for one.
const admissionDelay = 500 * time.Millisecond

// newAdmission returns an admission; its run goroutine is started by the
// caller.
func newAdmission(slots int, maxDelay time.Duration, deliver func(net.Conn), closed <-chan struct{}) *admission {
	a := &admission{slots: slots, maxDelay: maxDelay, deliver: deliver, closed: closed,
		wake: make(chan struct{}, 1), freed: make(chan struct{}, 1), held: make(map[net.Conn]time.Time)}
	return a
}

// enqueue queues a connection whose first bytes arrived.
func (a *admission) enqueue(c net.Conn) {
	a.mu.Lock()
	if a.stopped {
		a.mu.Unlock()
		c.Close()
		return
	}
	a.queue = append(a.queue, c)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *admission) queueLen() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.queue)
}

func (a *admission) pop() (net.Conn, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.queue) == 0 {
		return nil, false
	}
	c := a.queue[0]
	a.queue[0] = nil
	a.queue = a.queue[1:]
	if len(a.queue) == 0 {
		a.queue = nil // let the backing array go after a burst
	}
	return c, true
}

func (a *admission) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		c, ok := a.pop()
		if !ok {
			select {
			case <-a.wake:
				continue
			case <-a.closed:
				a.closeQueued()
				return
			}
		}
		if !a.place(c, timer) {
			c.Close()
			a.closeQueued()
			return
		}
	}
}

// place delivers c with a slot, retiring one held for maxDelay when all are
// taken. It reports false when the Handoff closed first.
func (a *admission) place(c net.Conn, timer *time.Timer) bool {
	for {
		wait := a.take(c)
		if wait <= 0 {
			a.deliver(c)
			return true
		}
		timer.Reset(wait)
		select {
		case <-a.freed:
			timer.Stop() // no stale tick can follow (Go 1.23 timers)
		case <-timer.C:
		case <-a.closed:
			return false
		}
	}
}

// take gives c a slot, a free one or the oldest once it has been held for
// maxDelay (retired: its request goes on, no longer counted), and returns 0;
// otherwise it returns how long until the oldest will have been held that
// long.
func (a *admission) take(c net.Conn) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if len(a.held) >= a.slots {
		var oldest net.Conn
		var since time.Time
		for h, t := range a.held {
			if oldest == nil || t.Before(since) {
				oldest, since = h, t
			}
		}
		if wait := since.Add(a.maxDelay).Sub(now); wait > 0 {
			return wait
		}
		delete(a.held, oldest)
	}
	a.held[c] = now
	return 0
}

// release gives back the slot c holds, if any.
func (a *admission) release(c net.Conn) {
	a.mu.Lock()
	_, ok := a.held[c]
	delete(a.held, c)
	a.mu.Unlock()
	if ok {
		select {
		case a.freed <- struct{}{}:
		default:
		}
	}
}

func (a *admission) closeQueued() {
	a.mu.Lock()
	q := a.queue
	a.queue = nil
	a.stopped = true
	a.mu.Unlock()
	for _, c := range q {
		c.Close()
	}
}

// ConnState is the server's ConnState hook: a connection's slot is given
// back once its request is done.
func (h *Handoff) ConnState(c net.Conn, s http.ConnState) {
	if h.adm == nil {
		return
	}
	switch s {
	case http.StateIdle, http.StateHijacked, http.StateClosed:
		h.adm.release(c)
	}
}

type connKey struct{}

// ConnContext is the server's ConnContext hook: it lets a handler find its
// connection's slot (ReleaseSlot).
func (h *Handoff) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if h.adm == nil {
		return ctx
	}
	return context.WithValue(ctx, connKey{}, slotHolder{h.adm, c})
}

type slotHolder struct {
	a *admission
	c net.Conn
}

// ReleaseSlot gives back the admission slot of the request's connection:
// a handler calls it before it waits for a long time on its own goroutine
// (a long-polling /sync), so that the slot serves other connections.
func ReleaseSlot(ctx context.Context) {
	if s, ok := ctx.Value(connKey{}).(slotHolder); ok {
		s.a.release(s.c)
	}
}
