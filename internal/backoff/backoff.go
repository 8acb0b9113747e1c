// Package backoff spaces the retries of background writers (the push
// writer, the search indexer): 100 ms doubling to 30 s.
package backoff

import "time"

// Delay is the wait before retry number attempt (0 for the first retry).
func Delay(attempt int) time.Duration {
	return min(30*time.Second, 100*time.Millisecond<<min(attempt, 9))
}

// Wait waits Delay(attempt) and reports true, or false as soon as stop
// closes.
func Wait(attempt int, stop <-chan struct{}) bool {
	t := time.NewTimer(Delay(attempt))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}
