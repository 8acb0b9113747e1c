package outbound

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-chat/haven/internal/metrics"
)

// EDUToDevice is the type of the EDUs QueueToDevice queues.
const EDUToDevice = "m.direct_to_device"

var toDeviceDepth = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "haven_federation_queue_to_device",
	Help: "To-device EDUs queued for a destination beyond those being sent, as its sender last saw.",
}, []string{"destination"})

func init() { metrics.Registry.MustRegister(toDeviceDepth) }

// toDeviceStream is the configuration of the to-device queue: like the
// EDU queue, but its messages wait for their destination maxAge (zero:
// until it takes them), and a message queued twice under the same message
// ID within two minutes is stored once.
func toDeviceStream(subject string, maxAge time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: streamName(subject), Subjects: []string{subject + ".*"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, MaxAge: maxAge, Duplicates: 2 * time.Minute,
	}
}

// toDevicePerTxn is how many to-device EDUs one transaction carries at
// most: half of its EDUs (the key service splits a send into EDUs of
// about 64 KiB, so a transaction stays within a few MiB).
func toDevicePerTxn(maxEDUs int) int { return max(1, maxEDUs/2) }

// fetchNow takes up to n messages that the consumer holds now.
func fetchNow(c jetstream.Consumer, n int) ([]jetstream.Msg, error) {
	if n <= 0 {
		return nil, nil
	}
	b, err := c.FetchNoWait(n)
	if err != nil {
		return nil, err
	}
	msgs, err := collect(b)
	if err := firstErr(err, b.Error()); err != nil {
		return msgs, err
	}
	return msgs, nil
}

// QueueToDevice queues an m.direct_to_device EDU (content: sender, type,
// message_id, messages) for the destination, and returns once JetStream
// has stored it. Unlike QueueEDU's, it waits for the destination as long
// as Options.ToDeviceMaxAge says (by default until the destination takes
// it): a room key sent to a site that is down arrives when the site is
// back. The EDUs of one destination go out in the order they were queued.
// messageID is the EDU's message_id: queued again within two minutes (a
// retried client request) it is stored once; later, the destination's
// record of the IDs it delivered drops the repeat.
func (q *Queues) QueueToDevice(ctx context.Context, destination, messageID string, content json.RawMessage) error {
	if !q.remote(destination) {
		return fmt.Errorf("queue to-device EDU: %q is not another server", destination)
	}
	if messageID == "" {
		return errors.New("queue to-device EDU: no message ID")
	}
	data, err := json.Marshal(gomatrixserverlib.EDU{Type: EDUToDevice, Origin: q.opts.ServerName, Content: spec.RawJSON(content)})
	if err != nil {
		return fmt.Errorf("encode to-device EDU: %w", err)
	}
	w, err := q.worker(ctx, destination)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: q.tdvSubj + "." + w.key, Data: data, Header: nats.Header{destHeader: []string{destination}}}
	ack, err := q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(w.key+"/"+messageID))
	if err != nil {
		return fmt.Errorf("queue to-device EDU for %s: %w", destination, err)
	}
	w.queued(&w.tdvQueued, ack)
	w.poke()
	return nil
}
