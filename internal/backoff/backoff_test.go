package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	for _, c := range []struct {
		attempt int
		want    time.Duration
	}{{0, 100 * time.Millisecond}, {1, 200 * time.Millisecond}, {8, 25600 * time.Millisecond}, {9, 30 * time.Second}, {1000, 30 * time.Second}} {
		if got := Delay(c.attempt); got != c.want {
			t.Errorf("Delay(%d) = %v, want %v", c.attempt, got, c.want)
		}
	}
}

func TestWaitStops(t *testing.T) {
	stop := make(chan struct{})
	close(stop)
	if Wait(20, stop) {
		t.Error("Wait went on after stop closed")
	}
}

func TestGather(t *testing.T) {
	wake, stop := make(chan struct{}, 1), make(chan struct{})
	wake <- struct{}{}
	if !Gather(wake, stop, time.Millisecond) {
		t.Error("Gather after a wake-up reported a stop")
	}
	close(stop)
	if Gather(wake, stop, time.Hour) {
		t.Error("Gather went on after stop closed")
	}
}
