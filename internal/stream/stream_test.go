package stream

import (
	"sync"
	"testing"
)

func TestReleasesInOrder(t *testing.T) {
	s := New(10)
	a, b, c := s.Next(), s.Next(), s.Next()
	if a != 11 || b != 12 || c != 13 {
		t.Fatalf("positions %d %d %d", a, b, c)
	}
	var got []int64
	pub := func(p int64, _ any) { got = append(got, p) }
	s.Done(c, "c", pub)
	s.Done(b, "b", pub)
	if s.Visible() != 10 || len(got) != 0 {
		t.Fatalf("visible %d before the lowest finished; published %v", s.Visible(), got)
	}
	s.Done(a, nil, pub)
	if s.Visible() != 13 || len(got) != 3 || got[0] != 11 || got[2] != 13 {
		t.Fatalf("visible %d published %v", s.Visible(), got)
	}
}

func TestConcurrentDoneIsMonotonic(t *testing.T) {
	s := New(0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var got []int64
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := s.Next()
			s.Done(p, p, func(pos int64, _ any) {
				mu.Lock()
				got = append(got, pos)
				mu.Unlock()
			})
		}()
	}
	wg.Wait()
	if len(got) != 1000 {
		t.Fatalf("published %d", len(got))
	}
	for i, p := range got {
		if p != int64(i+1) {
			t.Fatalf("out of order at %d: %d", i, p)
		}
	}
}
