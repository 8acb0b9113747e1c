// Package lru is a small bounded cache with least-recently-used eviction.
// It is safe for concurrent use and counts hits and misses in the metrics.
package lru

import (
	"container/list"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-chat/haven/internal/metrics"
)

// Cache maps K to V and holds at most Max entries.
type Cache[K comparable, V any] struct {
	mu        sync.Mutex
	max       int
	ll        *list.List
	items     map[K]*list.Element
	hit, miss prometheus.Counter
}

type entry[K comparable, V any] struct {
	k K
	v V
}

// New makes a cache of at most max entries, named for the metrics.
func New[K comparable, V any](name string, max int) *Cache[K, V] {
	if max < 1 {
		max = 1
	}
	return &Cache[K, V]{max: max, ll: list.New(), items: make(map[K]*list.Element),
		hit: metrics.CacheLookups.WithLabelValues(name, "hit"), miss: metrics.CacheLookups.WithLabelValues(name, "miss")}
}

// Get returns the value for k.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	el, ok := c.items[k]
	if ok {
		c.ll.MoveToFront(el)
		v := el.Value.(*entry[K, V]).v
		c.mu.Unlock()
		c.hit.Inc()
		return v, true
	}
	c.mu.Unlock()
	c.miss.Inc()
	var zero V
	return zero, false
}

// Peek returns the value for k without counting or reordering.
func (c *Cache[K, V]) Peek(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		return el.Value.(*entry[K, V]).v, true
	}
	var zero V
	return zero, false
}

// Put sets k to v, evicting the least recently used entry if full.
func (c *Cache[K, V]) Put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		el.Value.(*entry[K, V]).v = v
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&entry[K, V]{k, v})
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(*entry[K, V]).k)
	}
}

// Remove drops k.
func (c *Cache[K, V]) Remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.Remove(el)
		delete(c.items, k)
	}
}

// Len is the number of entries.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// Purge drops every entry.
func (c *Cache[K, V]) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	c.items = make(map[K]*list.Element)
}
