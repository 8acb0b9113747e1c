package stream

import (
	"sync"
	"testing"
)

// recorder collects what a sequencer publishes.
type recorder struct {
	mu       sync.Mutex
	pos      []int64
	payloads []any
}

func (r *recorder) publish(p int64, payload any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pos = append(r.pos, p)
	r.payloads = append(r.payloads, payload)
}

func TestReleasesInOrder(t *testing.T) {
	var rec recorder
	s := New(10, rec.publish)
	a, b, c := s.Next(), s.Next(), s.Next()
	if a != 11 || b != 12 || c != 13 {
		t.Fatalf("positions %d %d %d", a, b, c)
	}
	s.Done(c, "c")
	s.Done(b, "b")
	if s.Visible() != 10 || len(rec.pos) != 0 {
		t.Fatalf("visible %d before the lowest finished; published %v", s.Visible(), rec.pos)
	}
	s.Done(a, "a")
	if s.Visible() != 13 || len(rec.pos) != 3 || rec.pos[0] != 11 || rec.pos[2] != 13 || rec.payloads[0] != "a" || rec.payloads[2] != "c" {
		t.Fatalf("visible %d published %v %v", s.Visible(), rec.pos, rec.payloads)
	}
}

// TestSkipPublishesWhatWaitedBehindIt: a write that fails after others
// behind it committed must not take their publication with it.
func TestSkipPublishesWhatWaitedBehindIt(t *testing.T) {
	for _, c := range []struct {
		name  string
		order func(s *Sequencer, failed, other int64)
	}{
		{"failure last", func(s *Sequencer, failed, other int64) { s.Done(other, "other room"); s.Skip(failed) }},
		{"failure first", func(s *Sequencer, failed, other int64) { s.Skip(failed); s.Done(other, "other room") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var rec recorder
			s := New(0, rec.publish)
			failed, other := s.Next(), s.Next()
			c.order(s, failed, other)
			if len(rec.pos) != 2 || rec.pos[0] != failed || rec.payloads[0] != nil || rec.pos[1] != other || rec.payloads[1] != "other room" {
				t.Fatalf("published %v %v; want the skip at %d, then the other room's %d", rec.pos, rec.payloads, failed, other)
			}
			if s.Visible() != other {
				t.Fatalf("visible %d, want %d", s.Visible(), other)
			}
		})
	}
}

func TestNilPublishIsAllowed(t *testing.T) {
	s := New(0, nil)
	p := s.Next()
	s.Done(p, "x")
	if s.Visible() != p {
		t.Fatalf("visible %d", s.Visible())
	}
}

func TestConcurrentDoneIsMonotonic(t *testing.T) {
	var rec recorder
	s := New(0, rec.publish)
	var wg sync.WaitGroup
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := s.Next()
			if p%7 == 0 {
				s.Skip(p)
				return
			}
			s.Done(p, p)
		}()
	}
	wg.Wait()
	if len(rec.pos) != 1000 {
		t.Fatalf("published %d", len(rec.pos))
	}
	for i, p := range rec.pos {
		if p != int64(i+1) {
			t.Fatalf("out of order at %d: %d", i, p)
		}
		if (p%7 == 0) != (rec.payloads[i] == nil) {
			t.Fatalf("position %d published with %v", p, rec.payloads[i])
		}
	}
}
