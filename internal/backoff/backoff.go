// Package backoff spaces the work of background writers (the push writer,
// the search indexer, the to-device acknowledgements): retries, 100 ms
// doubling to 30 s, and the wait that lets work gather into one batch.
package backoff

import "time"

// Delay is the wait before retry number attempt (0 for the first retry).
func Delay(attempt int) time.Duration {
	return min(30*time.Second, 100*time.Millisecond<<min(attempt, 9))
}

// Wait waits Delay(attempt) and reports true, or false as soon as stop
// closes.
func Wait(attempt int, stop <-chan struct{}) bool { return sleep(Delay(attempt), stop) }

// Gather waits for a wake-up, then delay more so that the work following
// it joins the same batch. It reports false as soon as stop closes.
func Gather(wake, stop <-chan struct{}, delay time.Duration) bool {
	select {
	case <-wake:
	case <-stop:
		return false
	}
	return sleep(delay, stop)
}

// sleep waits d and reports true, or false as soon as stop closes.
func sleep(d time.Duration, stop <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}
