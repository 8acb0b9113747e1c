package backup

import (
	"context"
	"io"
	"time"
)

// pacer keeps a backup's reads at or under a rate, so a backup running
// beside the server leaves it disk time: after each chunk it sleeps until
// the bytes read so far are no more than rate allows since the start. A
// nil pacer, or a rate of 0, does not pace.
type pacer struct {
	rate  float64 // bytes a second
	start time.Time
	done  int64
	// slept is the time spent waiting, reported in the manifest.
	slept time.Duration
}

// newPacer paces at mibPerSec MiB/s; 0 or less means unlimited (nil).
func newPacer(mibPerSec float64) *pacer {
	if mibPerSec <= 0 {
		return nil
	}
	return &pacer{rate: mibPerSec * (1 << 20), start: time.Now()}
}

// wait accounts for n bytes read and sleeps as long as the rate needs.
func (p *pacer) wait(ctx context.Context, n int) error {
	if p == nil {
		return ctx.Err()
	}
	p.done += int64(n)
	ahead := time.Duration(float64(p.done)/p.rate*float64(time.Second)) - time.Since(p.start)
	if ahead <= time.Millisecond {
		return ctx.Err()
	}
	t := time.NewTimer(ahead)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		p.slept += ahead
		return nil
	}
}

// pacedReader reads through a pacer.
type pacedReader struct {
	ctx context.Context
	r   io.Reader
	p   *pacer
}

func (r pacedReader) Read(b []byte) (int, error) {
	if len(b) > 1<<20 {
		b = b[:1<<20]
	}
	n, err := r.r.Read(b)
	if n > 0 {
		if werr := r.p.wait(r.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}
