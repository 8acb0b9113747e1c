package push

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	d := &deliverer{s: &Service{opts: Options{RetryBase: 2 * time.Second, RetryMax: 10 * time.Minute}}}
	tests := []struct {
		attempt uint64
		want    time.Duration
	}{
		{0, 2 * time.Second},
		{1, 2 * time.Second},
		{2, 4 * time.Second},
		{3, 8 * time.Second},
		{9, 512 * time.Second},
		{10, 10 * time.Minute},
		{1000, 10 * time.Minute},
	}
	for _, tc := range tests {
		if got := d.backoff(tc.attempt); got != tc.want {
			t.Errorf("backoff(%d) = %v, want %v", tc.attempt, got, tc.want)
		}
	}
}

func TestStreamName(t *testing.T) {
	if got := streamName("haven.example_com_8448.push.deliver"); got != "HAVEN_EXAMPLE_COM_8448_PUSH_DELIVER" {
		t.Errorf("streamName: %s", got)
	}
}
