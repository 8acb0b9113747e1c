package lru

import "testing"

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	c := New[string, int]("test", 2)
	c.Put("a", 1)
	c.Put("b", 2)
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatal("a missing")
	}
	c.Put("c", 3) // evicts b, the least recently used
	if _, ok := c.Get("b"); ok {
		t.Fatal("b still there")
	}
	if _, ok := c.Get("a"); !ok {
		t.Fatal("a evicted")
	}
	c.Put("a", 10)
	if v, _ := c.Peek("a"); v != 10 || c.Len() != 2 {
		t.Fatalf("a=%d len=%d", v, c.Len())
	}
	c.Remove("a")
	if _, ok := c.Peek("a"); ok || c.Len() != 1 {
		t.Fatal("remove failed")
	}
}
