// Package memtrim gives memory back to the operating system once the
// server has gone quiet after a burst.
//
// Go's collector sets its next goal at twice the heap it found live, and
// while nothing is allocated no collection runs: after a burst (thousands
// of clients reconnecting at once after a restart, say) the process keeps
// the burst's memory for minutes, until the runtime's forced collection
// every two minutes and the slow background scavenger give it back. An
// admin reading the RSS then sees the burst, not what the server needs.
//
// Trimmer checks at an interval. When no collection ran during the last
// interval (the server is quiet) and the heap holds more than a threshold,
// it collects once and returns the free memory (debug.FreeOSMemory). A busy
// server collects on its own and is never trimmed; a quiet one is trimmed
// at most once per quiet spell, which costs one collection.
package memtrim

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/sirupsen/logrus"
)

// Default values for Run.
const (
	DefaultInterval  = 10 * time.Second
	DefaultThreshold = 64 << 20
)

// sample names the runtime metrics the trimmer reads.
var sampleNames = []string{
	"/gc/cycles/total:gc-cycles",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
}

type reading struct {
	cycles uint64
	// heap is the heap memory held: objects (live or not yet collected),
	// and free pages not yet returned.
	heap uint64
	// resident is the runtime's memory minus what it already returned.
	resident uint64
}

func read(s []metrics.Sample) reading {
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	objects, free, unused, total, released := v(1), v(2), v(3), v(4), v(5)
	r := reading{cycles: v(0), heap: objects + free + unused}
	if total > released {
		r.resident = total - released
	}
	return r
}

// Trimmer decides when to trim; Check is called once per interval.
type Trimmer struct {
	Threshold uint64
	// Trim collects and returns free memory; debug.FreeOSMemory unless a
	// test replaces it.
	Trim func()
	Log  logrus.FieldLogger

	samples []metrics.Sample
	last    uint64 // collections counted at the previous check
	started bool
	trimmed bool // already trimmed in this quiet spell
	// floor is the heap right after the last trim: the next trim waits
	// until the heap has grown by Threshold beyond it, so that a large
	// live heap alone does not cost a collection every quiet spell.
	floor uint64
}

// New returns a trimmer with the given threshold.
func New(threshold uint64, log logrus.FieldLogger) *Trimmer {
	t := &Trimmer{Threshold: threshold, Trim: debug.FreeOSMemory, Log: log}
	t.samples = make([]metrics.Sample, len(sampleNames))
	for i, n := range sampleNames {
		t.samples[i].Name = n
	}
	return t
}

// Check trims when the process has been quiet since the previous check and
// its heap holds more than Threshold, and Threshold more than after the
// last trim. It reports whether it trimmed.
func (t *Trimmer) Check() bool {
	r := read(t.samples)
	quiet := t.started && r.cycles == t.last
	t.started = true
	if !quiet {
		t.last, t.trimmed = r.cycles, false
		return false
	}
	if t.trimmed || r.heap < max(t.Threshold, t.floor+t.Threshold) {
		return false
	}
	t.Trim()
	after := read(t.samples)
	// The trim's own collection does not end the quiet spell.
	t.last, t.trimmed, t.floor = after.cycles, true, after.heap
	if t.Log != nil && r.resident > after.resident {
		t.Log.WithField("freed_mib", (r.resident-after.resident)>>20).
			WithField("resident_mib", after.resident>>20).Debug("memory returned to the system after a quiet spell")
	}
	return true
}

// Run checks every interval until ctx ends.
func (t *Trimmer) Run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.Check()
		}
	}
}
