package syncapi

import (
	"context"
	"sync"
	"time"
)

// Waiter is a /sync that found nothing to answer yet. Its listener is
// registered, so a commit for the device wakes it; Wait holds a goroutine
// while waiting, Park holds none.
type Waiter struct {
	s        *Service
	req      SyncRequest
	cur      Pos
	deadline time.Time
	l        *Listener
	// For a parked waiter: mu serialises its wake-up, its timeout and
	// Cancel; done is set once its answer is decided.
	mu     sync.Mutex
	done   bool
	timer  *time.Timer
	answer func(*Response, error)
	ctx    context.Context
}

// check registers a listener and answers if anything is new for the device
// (or if final: then it answers even with nothing). A nil response means
// "keep waiting", with w.l registered.
func (w *Waiter) check(ctx context.Context, final bool) (*Response, error) {
	s, req := w.s, w.req
	for {
		w.l = s.n.Listen(req.UserID, req.DeviceID)
		if !s.n.HasNews(req.UserID, req.DeviceID, w.cur) {
			if !final && time.Now().Before(w.deadline) {
				return nil, nil
			}
			w.l.Close()
			w.l = nil
			return w.emptyAnswer(ctx, final)
		}
		w.l.Close()
		w.l = nil
		resp, err := s.build(ctx, req, &w.cur, s.n.View(req.UserID))
		if err != nil || !resp.empty() || final || !time.Now().Before(w.deadline) {
			return resp, err
		}
		// Nothing for this device after all: move on and keep waiting.
		next, _ := ParsePos(resp.NextBatch)
		w.cur = next.Max(w.cur)
	}
}

// emptyAnswer is the answer of a sync that waited in vain (or did not wait).
func (w *Waiter) emptyAnswer(ctx context.Context, build bool) (*Response, error) {
	if build {
		return w.s.build(ctx, w.req, &w.cur, w.s.n.View(w.req.UserID))
	}
	resp := newResponse()
	resp.NextBatch = w.cur.String()
	if w.req.eventStream {
		return resp, nil
	}
	if err := w.s.keyCounts(ctx, w.req, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// Wait blocks until there is something for the device or the deadline passes.
func (w *Waiter) Wait(ctx context.Context) (*Response, error) {
	timer := time.NewTimer(time.Until(w.deadline))
	defer timer.Stop()
	for {
		select {
		case <-w.l.Wake():
			w.l.Close()
			w.l = nil
			resp, err := w.check(ctx, false)
			if err != nil || resp != nil {
				return resp, err
			}
		case <-timer.C:
			w.l.Close()
			w.l = nil
			return w.emptyAnswer(ctx, false)
		case <-ctx.Done():
			w.l.Close()
			w.l = nil
			return nil, ctx.Err()
		}
	}
}

// Park waits without holding a goroutine: answer is called exactly once,
// on a goroutine of its own, when there is something for the device, when
// the deadline passes, or when Cancel is called. ctx must outlive the
// request (it is used to build the answer).
func (w *Waiter) Park(ctx context.Context, answer func(*Response, error)) {
	w.mu.Lock()
	w.ctx, w.answer = ctx, answer
	w.timer = time.AfterFunc(time.Until(w.deadline), w.timeout)
	w.s.n.onWake(w.l, w.woken)
	w.mu.Unlock()
}

// woken runs (on its own goroutine) when the listener fires.
func (w *Waiter) woken() {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	w.l.Close()
	w.l = nil
	resp, err := w.check(w.ctx, false)
	if err == nil && resp == nil {
		// Still nothing for the device: park again on the new listener.
		w.s.n.onWake(w.l, w.woken)
		w.mu.Unlock()
		return
	}
	w.done = true
	w.mu.Unlock()
	w.timer.Stop()
	w.answer(resp, err)
}

// timeout ends the wait with an empty answer (deadline or Cancel).
func (w *Waiter) timeout() {
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
	resp, err := w.emptyAnswer(w.ctx, false)
	w.answer(resp, err)
}

// Cancel ends a parked wait at once with an empty answer (shutdown).
func (w *Waiter) Cancel() { go w.timeout() }

// Waiting is the number of /syncs waiting (registered listeners).
func (s *Service) Waiting() int { return s.n.Waiting() }
