package httpx

import "sync/atomic"

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) Add(d int64) { c.n.Add(d) }
func (c *atomicCounter) Load() int64 { return c.n.Load() }
