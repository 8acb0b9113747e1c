package memtrim

import (
	"runtime"
	"runtime/debug"
	"testing"
)

var sink [][]byte

// burst allocates n MiB that stay reachable until drop is called.
func burst(n int) (drop func()) {
	for i := 0; i < n; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1 // touch every page so that it is resident
		}
		sink = append(sink, b)
	}
	return func() { sink = nil }
}

func TestTrim(t *testing.T) {
	// No collection may start on its own between the checks.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	cases := []struct {
		name      string
		threshold uint64
		between   func() // runs between the first and the second check
		want      []bool // what the second and third checks report
	}{
		{"quiet after a burst: trimmed once", 16 << 20, nil, []bool{true, false}},
		{"busy: a collection ran meanwhile", 16 << 20, runtime.GC, []bool{false, true}},
		{"heap below the threshold", 1 << 40, nil, []bool{false, false}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runtime.GC()
			drop := burst(128)
			runtime.GC() // the burst is live at this collection
			drop()
			calls := 0
			tr := New(c.threshold, nil)
			tr.Trim = func() { calls++; debug.FreeOSMemory() }
			if tr.Check() {
				t.Fatal("the first check trimmed: it has nothing to compare with")
			}
			if c.between != nil {
				c.between()
			}
			before := read(tr.samples).resident
			var got []bool
			for range c.want {
				got = append(got, tr.Check())
			}
			for i := range c.want {
				if got[i] != c.want[i] {
					t.Fatalf("checks reported %v, want %v", got, c.want)
				}
			}
			if calls > 1 {
				t.Fatalf("trimmed %d times in one quiet spell", calls)
			}
			if calls == 1 {
				after := read(tr.samples).resident
				if after+64<<20 > before {
					t.Fatalf("trim gave back %d MiB of the 128 MiB burst (resident %d -> %d MiB)",
						(int64(before)-int64(after))>>20, before>>20, after>>20)
				}
			}
		})
	}
}

func TestNoTrimWithoutGrowth(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	runtime.GC()
	drop := burst(128)
	runtime.GC()
	drop()
	keep := burst(96) // a live heap above the threshold
	defer keep()
	tr := New(16<<20, nil)
	calls := 0
	tr.Trim = func() { calls++; debug.FreeOSMemory() }
	tr.Check()
	if !tr.Check() {
		t.Fatal("the quiet burst was not trimmed")
	}
	// A new quiet spell, with nothing new on the heap: the live 96 MiB
	// alone is no reason to collect again.
	runtime.GC()
	tr.Check()
	if tr.Check() || calls != 1 {
		t.Fatalf("trimmed %d times; the second quiet spell had nothing to give back", calls)
	}
}
