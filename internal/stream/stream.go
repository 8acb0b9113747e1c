// Package stream hands out the positions of one stream and tells when they
// become visible. A position is visible only once it and every position below
// it have finished (committed, or failed and skipped), so readers never see
// position N and later miss N-1.
//
// Every position reaches the stream's publish function exactly once, in
// order: a committed one with its payload, a failed one with a nil payload
// (the writer publishes that as an explicit skip where its readers need an
// unbroken sequence). A position is never released silently.
package stream

import "sync"

// Publish is told, in position order and never concurrently, of every
// position that became visible, with the payload it finished with (nil for a
// failed write).
type Publish func(pos int64, payload any)

// Sequencer allocates increasing positions and releases them in order.
// It is owned by the stream's single writer.
type Sequencer struct {
	mu      sync.Mutex
	next    int64
	visible int64
	pending map[int64]*slot
	release sync.Mutex
	publish Publish
}

type slot struct {
	done    bool
	payload any
}

// New starts a sequencer after the highest position already stored; publish
// (which may be nil when nobody reads the stream) is told of every position.
func New(last int64, publish Publish) *Sequencer {
	return &Sequencer{next: last + 1, visible: last, pending: make(map[int64]*slot), publish: publish}
}

// Next allocates the next position.
func (s *Sequencer) Next() int64 {
	return s.NextN(1)
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

// Done marks pos committed with its payload. Every position that becomes
// visible is published, in order, before Done returns.
func (s *Sequencer) Done(pos int64, payload any) {
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
	if s.publish != nil {
		for i, p := range out {
			s.publish(p, payloads[i])
		}
	}
}

// Skip marks pos failed: nothing was written at it. It is published with a
// nil payload, and the positions after it that waited for it are published
// with theirs.
func (s *Sequencer) Skip(pos int64) { s.Done(pos, nil) }
