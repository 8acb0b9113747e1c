package clientapi

import (
	"math"
	"sync"
	"time"

	"github.com/haven-chat/haven/internal/config"
)

// Limiter is a set of token buckets, one per (class, key), kept in memory.
// Idle buckets are dropped so memory stays bounded.
type Limiter struct {
	mu      sync.Mutex
	rates   map[limitClass]rate
	buckets map[bucketKey]*bucket
	sweep   time.Time
}

type rate struct {
	perSec float64
	burst  float64
}

type bucketKey struct {
	class limitClass
	key   string
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewLimiter builds the limiter from the rate_limits settings; nil when disabled.
func NewLimiter(c config.RateLimits) *Limiter {
	if !c.Enabled {
		return nil
	}
	return &Limiter{
		rates: map[limitClass]rate{
			limitLogin:    {perSec: float64(c.LoginPerMinute) / 60, burst: math.Max(1, float64(c.LoginPerMinute)/2)},
			limitRegister: {perSec: float64(c.RegisterPerMinute) / 60, burst: math.Max(1, float64(c.RegisterPerMinute)/2)},
			limitMessage:  {perSec: c.MessagesPerSecond, burst: float64(c.MessageBurst)},
		},
		buckets: make(map[bucketKey]*bucket),
	}
}

// Refund gives back part of a token taken for (class, key).
func (l *Limiter) Refund(class limitClass, key string, part float64) {
	r, ok := l.rates[class]
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.buckets[bucketKey{class, key}]; b != nil {
		b.tokens = math.Min(r.burst, b.tokens+part)
	}
}

// Allow takes a token for (class, key) and returns 0, or how long to wait.
func (l *Limiter) Allow(class limitClass, key string, now time.Time) time.Duration {
	r, ok := l.rates[class]
	if !ok || r.perSec <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.sweep) > time.Minute {
		for k, b := range l.buckets {
			if now.Sub(b.last).Seconds()*l.rates[k.class].perSec > l.rates[k.class].burst {
				delete(l.buckets, k)
			}
		}
		l.sweep = now
	}
	k := bucketKey{class, key}
	b := l.buckets[k]
	if b == nil {
		b = &bucket{tokens: r.burst, last: now}
		l.buckets[k] = b
	}
	b.tokens = math.Min(r.burst, b.tokens+now.Sub(b.last).Seconds()*r.perSec)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / r.perSec * float64(time.Second))
}
