package main

import (
	"strings"
	"testing"
)

// TestLoadtestSlidingAgainstTheRealServer: `haven loadtest --sync
// sliding` holds sliding sync long-polls instead of /sync, and every
// message reaches every other member of its room through them.
func TestLoadtestSlidingAgainstTheRealServer(t *testing.T) {
	t.Parallel()
	rep, text := startLoadServer(t).load(true, "--users", "10", "--rooms", "2", "--rate", "20", "--duration", "2s",
		"--sync", "sliding", "--timeline-limit", "5")
	if rep.Config.Sync != "sliding" || rep.Config.TimelineLimit != 5 {
		t.Errorf("config: sync %q, timeline limit %d", rep.Config.Sync, rep.Config.TimelineLimit)
	}
	l := rep.Load
	if l == nil {
		t.Fatalf("no load section:\n%s", text)
	}
	// Each of the 40 messages goes to the 4 other members of its room.
	if l.Sent != 40 || l.LostMessages != 0 || l.DeliveriesWanted != 160 || l.DeliveriesSeen != 160 || l.DeliveryLatency.Count != 160 {
		t.Errorf("sent %d, lost %d, deliveries %d of %d (latencies %d)", l.Sent, l.LostMessages, l.DeliveriesSeen, l.DeliveriesWanted, l.DeliveryLatency.Count)
	}
	if len(l.SyncErrors) != 0 || l.LongPollsAtEnd != 10 {
		t.Errorf("sync errors %v, %d long-polls open at the end", l.SyncErrors, l.LongPollsAtEnd)
	}
	if !strings.Contains(text, "each user holds a sliding sync long-poll") {
		t.Errorf("text report does not say sliding sync:\n%s", text)
	}
}
