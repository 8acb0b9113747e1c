// Package stream hands out the positions of one stream and tells when they
// become visible. A position is visible only once it and every position below
// it have finished (committed, or failed and left as a gap), so readers never
// see position N and later miss N-1.
package stream

import "sync"

// Sequencer allocates increasing positions and releases them in order.
// It is owned by the stream's single writer.
type Sequencer struct {
	mu      sync.Mutex
	next    int64
	visible int64
	pending map[int64]*slot
	release sync.Mutex
}

type slot struct {
	done    bool
	payload any
}

// New starts a sequencer after the highest position already stored.
func New(last int64) *Sequencer {
	return &Sequencer{next: last + 1, visible: last, pending: make(map[int64]*slot)}
}

// Next allocates the next position.
func (s *Sequencer) Next() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.next
	s.next++
	s.pending[p] = &slot{}
	return p
}

// NextN allocates n consecutive positions and returns the first.
func (s *Sequencer) NextN(n int) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.next
	for i := 0; i < n; i++ {
		s.pending[s.next] = &slot{}
		s.next++
	}
	return p
}

// Visible is the highest position below which everything has finished.
func (s *Sequencer) Visible() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.visible
}

// Done marks pos finished. payload may be nil (a failed write leaves a gap).
// publish is called, in position order and never concurrently, with every
// position that became visible and its payload.
func (s *Sequencer) Done(pos int64, payload any, publish func(pos int64, payload any)) {
	s.release.Lock()
	defer s.release.Unlock()
	s.mu.Lock()
	if sl, ok := s.pending[pos]; ok {
		sl.done = true
		sl.payload = payload
	}
	var out []int64
	var payloads []any
	for {
		sl, ok := s.pending[s.visible+1]
		if !ok || !sl.done {
			break
		}
		delete(s.pending, s.visible+1)
		s.visible++
		out = append(out, s.visible)
		payloads = append(payloads, sl.payload)
	}
	s.mu.Unlock()
	if publish != nil {
		for i, p := range out {
			publish(p, payloads[i])
		}
	}
}
