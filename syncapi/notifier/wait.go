package notifier

import (
	"context"
	"sync"
	"time"
)

// Poll is one long-poll as the Waiter drives it: /sync, GET /events, and
// any other sync API built on the same notifier. It keeps its own
// position (the token it answers from).
type Poll[R any] interface {
	// News samples the notifier (no query): may anything after the poll's
	// position concern the device? It runs with the listener registered.
	News() bool
	// Answer builds the answer from the poll's position. With force it
	// answers even when there is nothing for the device; without it, ok
	// false means nothing for the device after all: the poll moved its
	// position on and the Waiter waits again.
	Answer(ctx context.Context, force bool) (resp R, ok bool, err error)
	// Empty is the answer of a wait in vain (the deadline passed).
	Empty(ctx context.Context) (R, error)
}

// Waiter is a long-poll that found nothing to answer yet: subscribe
// (Listen), then sample (Poll.News), then wait. Its listener is
// registered, so a commit for the device wakes it; Wait holds a goroutine
// while waiting, Park holds none.
type Waiter[R any] struct {
	n        *Notifier
	user     string
	device   string
	poll     Poll[R]
	deadline time.Time
	l        *Listener
	// For a parked waiter: mu serialises its wake-up, its timeout and
	// Cancel; done is set once its answer is decided.
	mu     sync.Mutex
	done   bool
	timer  *time.Timer
	answer func(R, error)
	ctx    context.Context
}

// Start answers a long-poll at once when anything is new for the device
// (or, with timeout <= 0, whatever there is). Otherwise it returns a
// Waiter whose listener is registered: nothing committed from then on is
// missed, and the caller chooses how to wait (Wait, or Park). w, when not
// nil, is the (zero) Waiter to use: one the poll holds saves an allocation
// per long-poll.
func Start[R any](ctx context.Context, n *Notifier, user, device string, timeout time.Duration, p Poll[R], w *Waiter[R]) (R, *Waiter[R], error) {
	if w == nil {
		w = &Waiter[R]{}
	}
	w.n, w.user, w.device, w.poll, w.deadline = n, user, device, p, time.Now().Add(timeout)
	resp, done, err := w.check(ctx, timeout <= 0)
	if err != nil || done {
		return resp, nil, err
	}
	return resp, w, nil
}

// check registers a listener and answers if anything is new for the
// device (or if final: then it answers even with nothing). done false
// means "keep waiting", with w.l registered.
func (w *Waiter[R]) check(ctx context.Context, final bool) (resp R, done bool, err error) {
	for {
		w.l = w.n.Listen(w.user, w.device)
		if !w.poll.News() {
			if !final && time.Now().Before(w.deadline) {
				return resp, false, nil
			}
			w.l.Close()
			w.l = nil
			if final {
				resp, _, err = w.poll.Answer(ctx, true)
				return resp, true, err
			}
			resp, err = w.poll.Empty(ctx)
			return resp, true, err
		}
		w.l.Close()
		w.l = nil
		resp, ok, err := w.poll.Answer(ctx, final || !time.Now().Before(w.deadline))
		if err != nil || ok {
			return resp, true, err
		}
	}
}

// Wait blocks until there is something for the device or the deadline passes.
func (w *Waiter[R]) Wait(ctx context.Context) (R, error) {
	timer := time.NewTimer(time.Until(w.deadline))
	defer timer.Stop()
	for {
		select {
		case <-w.l.Wake():
			w.l.Close()
			w.l = nil
			resp, done, err := w.check(ctx, false)
			if err != nil || done {
				return resp, err
			}
		case <-timer.C:
			w.l.Close()
			w.l = nil
			return w.poll.Empty(ctx)
		case <-ctx.Done():
			w.l.Close()
			w.l = nil
			var zero R
			return zero, ctx.Err()
		}
	}
}

// Park waits without holding a goroutine: answer is called exactly once,
// on a goroutine of its own, when there is something for the device, when
// the deadline passes, or when Cancel is called. ctx must outlive the
// request (it is used to build the answer).
func (w *Waiter[R]) Park(ctx context.Context, answer func(R, error)) {
	w.mu.Lock()
	w.ctx, w.answer = ctx, answer
	w.timer = time.AfterFunc(time.Until(w.deadline), w.timeout)
	w.l.OnWake(w.woken)
	w.mu.Unlock()
}

// woken runs (on its own goroutine) when the listener fires.
func (w *Waiter[R]) woken() {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	w.l.Close()
	w.l = nil
	resp, done, err := w.check(w.ctx, false)
	if err == nil && !done {
		// Still nothing for the device: park again on the new listener.
		w.l.OnWake(w.woken)
		w.mu.Unlock()
		return
	}
	w.done = true
	w.mu.Unlock()
	w.timer.Stop()
	w.answer(resp, err)
}

// timeout ends the wait with an empty answer (deadline or Cancel).
func (w *Waiter[R]) timeout() {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	w.done = true
	if w.l != nil {
		w.l.Close()
		w.l = nil
	}
	w.mu.Unlock()
	resp, err := w.poll.Empty(w.ctx)
	w.answer(resp, err)
}

// Cancel ends a parked wait at once with an empty answer (shutdown).
func (w *Waiter[R]) Cancel() { go w.timeout() }
