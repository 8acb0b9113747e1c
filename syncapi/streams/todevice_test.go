package streams

import (
	"context"
	"encoding/json"
	"testing"
)

// queue is a to-device queue in memory: the positions of one device's messages.
type queue struct {
	msgs  []int64
	reads int
	acks  []int64
}

func (q *queue) ToDeviceMessages(_ context.Context, _, _ string, after, upto int64, limit int) ([]json.RawMessage, int64, error) {
	q.reads++
	var out []json.RawMessage
	var last int64
	for _, p := range q.msgs {
		if p > after && p <= upto && len(out) < limit {
			out = append(out, json.RawMessage(`{}`))
			last = p
		}
	}
	return out, last, nil
}
func (q *queue) AckToDevice(_ context.Context, _, _ string, upto int64) error {
	q.acks = append(q.acks, upto)
	return nil
}
func (q *queue) ToDeviceBacklog(_ context.Context, fn func(string, string, int64, int64)) error {
	if len(q.msgs) > 0 {
		fn("@a", "D", q.msgs[0], q.msgs[len(q.msgs)-1])
	}
	return nil
}

// TestToDevice: a device with nothing queued costs no read and no delete;
// a backlog longer than one response is delivered in pieces, each
// response's position at its last message; a token acknowledges what it
// covers.
func TestToDevice(t *testing.T) {
	ctx := context.Background()
	q := &queue{}
	for p := int64(1); p <= ToDeviceLimit+20; p++ {
		q.msgs = append(q.msgs, p)
	}
	td := NewToDevice(q)
	if err := td.Load(ctx); err != nil {
		t.Fatal(err)
	}
	upto := int64(ToDeviceLimit + 20)
	if evs, reached, _ := td.Messages(ctx, "@b", "D", 0, upto); evs != nil || reached != upto || q.reads != 0 {
		t.Fatalf("another device: %d %d reads %d", len(evs), reached, q.reads)
	}
	evs, reached, err := td.Messages(ctx, "@a", "D", 0, upto)
	if err != nil || len(evs) != ToDeviceLimit || reached != ToDeviceLimit {
		t.Fatalf("first piece: %d %d %v", len(evs), reached, err)
	}
	evs, reached, _ = td.Messages(ctx, "@a", "D", reached, upto)
	if len(evs) != 20 || reached != upto {
		t.Fatalf("second piece: %d %d", len(evs), reached)
	}
	td.Ack(ctx, "@b", "D", upto) // nothing pending: no delete
	td.Ack(ctx, "@a", "D", ToDeviceLimit)
	td.Ack(ctx, "@a", "D", upto)
	td.Ack(ctx, "@a", "D", upto) // all acknowledged already
	if len(q.acks) != 2 || q.acks[0] != ToDeviceLimit || q.acks[1] != upto {
		t.Fatalf("acks %v", q.acks)
	}
	td.Queued("@a", "D", upto+1)
	q.msgs = append(q.msgs, upto+1)
	if evs, reached, _ := td.Messages(ctx, "@a", "D", upto, upto+1); len(evs) != 1 || reached != upto+1 {
		t.Fatalf("after a new message: %d %d", len(evs), reached)
	}
	if evs, _, _ := NewToDevice(nil).Messages(ctx, "@a", "D", 0, 5); evs != nil {
		t.Fatal("without a key service")
	}
}
