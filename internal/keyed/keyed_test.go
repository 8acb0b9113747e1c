package keyed

import (
	"sync"
	"testing"
)

func TestMutexSerialisesSameKey(t *testing.T) {
	var m Mutex
	var wg sync.WaitGroup
	counts := map[string]int{}
	var cmu sync.Mutex
	inside := map[string]int{}
	for i := 0; i < 200; i++ {
		key := []string{"a", "b", "c"}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := m.Lock(key)
			cmu.Lock()
			inside[key]++
			if inside[key] != 1 {
				t.Errorf("two holders of key %s", key)
			}
			counts[key]++
			cmu.Unlock()
			cmu.Lock()
			inside[key]--
			cmu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if counts["a"]+counts["b"]+counts["c"] != 200 {
		t.Fatalf("counts %v", counts)
	}
	if m.Len() != 0 {
		t.Fatalf("entries left behind: %d", m.Len())
	}
}
