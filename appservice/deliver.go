package appservice

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/metrics"
)

// txnAttempts counts the attempts to send a transaction, by result.
var txnAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "haven_appservice_transactions_total",
	Help: "Attempts to send a transaction to an application service, by result (sent, retry, dropped).",
}, []string{"result"})

func init() { metrics.Registry.MustRegister(txnAttempts) }

// sender sends one service its queued transactions, one at a time and in
// queue order: the JetStream consumer lets one message out at a time
// (MaxAckPending 1) and a failed transaction is retried in place, with
// growing waits, until the service takes it. Meanwhile the message is
// kept ours (InProgress); at a stop it is handed back (Nak) and comes
// first at the next start. After a crash it comes back when its AckWait
// ends.
type sender struct {
	s       *Service
	r       *Registration
	subject string
	cons    jetstream.Consumer
	wake    chan struct{}
}

// senderAckWait is how long a message taken by a sender that died stays
// away from the others; a live sender renews it every third of it.
const senderAckWait = 10 * time.Second

// queueKey is a subject token for a service ID: its letters and digits and
// a hash that keeps IDs that differ elsewhere apart.
func queueKey(id string) string {
	var b strings.Builder
	for _, c := range id {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' {
			b.WriteRune(c)
		}
		if b.Len() >= 32 {
			break
		}
	}
	sum := sha256.Sum256([]byte(id))
	return b.String() + "_" + hex.EncodeToString(sum[:4])
}

func newSender(ctx context.Context, s *Service, r *Registration) (*sender, error) {
	subject := s.d.Bus.Subject("appservice." + queueKey(r.ID))
	name := strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(subject))
	if _, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{subject}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	}); err != nil {
		return nil, fmt.Errorf("appservice %s: queue stream %s: %w", r.ID, name, err)
	}
	cons, err := s.js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{
		Durable: "appservice_sender", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: senderAckWait, MaxAckPending: 1, MaxDeliver: -1,
	})
	if err != nil {
		return nil, fmt.Errorf("appservice %s: queue consumer: %w", r.ID, err)
	}
	return &sender{s: s, r: r, subject: subject, cons: cons, wake: make(chan struct{}, 1)}, nil
}

// poke ends a wait before a retry (the service answered a ping).
func (d *sender) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *sender) run() {
	defer d.s.wg.Done()
	ctx, cancel := context.WithCancel(logging.With(context.Background(), logging.From(context.Background()).WithField("appservice", d.r.ID)))
	defer cancel()
	go func() {
		select {
		case <-d.s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for ctx.Err() == nil {
		// One message per pull, so that none waits in a buffer of ours
		// (it would stay taken until its AckWait ends, holding up the
		// queue); the pull ends with the context at a stop.
		fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
		batch, err := d.cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			fcancel()
			if ctx.Err() != nil {
				return
			}
			logging.From(ctx).WithError(err).Warn("appservice: read the transaction queue")
			if !d.sleep(time.Second) {
				return
			}
			continue
		}
		for msg := range batch.Messages() {
			if ctx.Err() != nil {
				_ = msg.Nak()
				continue
			}
			d.deliver(ctx, msg)
		}
		fcancel()
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			logging.From(ctx).WithError(err).Warn("appservice: read the transaction queue")
			if !d.sleep(time.Second) {
				return
			}
		}
	}
}

// deliver sends one queued transaction until the service takes it, and
// acknowledges it then.
func (d *sender) deliver(ctx context.Context, msg jetstream.Msg) {
	var q queuedTxn
	if err := json.Unmarshal(msg.Data(), &q); err != nil {
		logging.From(ctx).WithError(err).Error("appservice: bad queued transaction dropped")
		_ = msg.Term()
		return
	}
	body := map[string]any{"events": q.Events}
	if len(q.Ephemeral) > 0 {
		body["ephemeral"] = q.Ephemeral
		body["de.sorunome.msc2409.ephemeral"] = q.Ephemeral
	}
	if len(q.ToDevice) > 0 {
		body["to_device"] = q.ToDevice
		body["de.sorunome.msc2409.to_device"] = q.ToDevice
	}
	if len(q.DeviceLists) > 0 {
		dl := map[string][]string{"changed": q.DeviceLists, "left": {}}
		body["device_lists"] = dl
		body["org.matrix.msc3202.device_lists"] = dl
	}
	log := logging.From(ctx).WithFields(logrus.Fields{"txn_id": q.TxnID, "events": len(q.Events)})
	// The message stays ours while it is being sent and retried.
	kept := make(chan struct{})
	defer close(kept)
	go func() {
		t := time.NewTicker(senderAckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = msg.InProgress()
			case <-kept:
				return
			}
		}
	}()
	for attempt := 0; ; attempt++ {
		status, raw, err := request(ctx, d.s.opts.HTTPClient, d.s.opts.TxnTimeout, d.r, http.MethodPut,
			"/_matrix/app/v1/transactions/"+url.PathEscape(q.TxnID), body)
		if err == nil && status/100 == 2 {
			txnAttempts.WithLabelValues("sent").Inc()
			if attempt > 0 {
				log.WithField("attempts", attempt+1).Info("appservice: the service takes transactions again")
			}
			_ = msg.Ack()
			return
		}
		if ctx.Err() != nil {
			_ = msg.Nak() // stopping: first again at the next start
			return
		}
		// A service that keeps refusing a transaction as malformed would
		// hold up all the others: after five tries it is dropped.
		if err == nil && status/100 == 4 && status != http.StatusTooManyRequests && status != http.StatusNotFound && attempt >= 4 {
			log.WithFields(logrus.Fields{"status": status, "body": truncate(string(raw), 200)}).Error("appservice: the service refuses a transaction; dropped")
			txnAttempts.WithLabelValues("dropped").Inc()
			_ = msg.Term()
			return
		}
		txnAttempts.WithLabelValues("retry").Inc()
		delay := d.delay(attempt)
		if attempt == 0 || attempt%10 == 0 {
			e := log.WithFields(logrus.Fields{"attempt": attempt + 1, "retry_in": delay.String()})
			if err != nil {
				e = e.WithError(err)
			} else {
				e = e.WithField("status", status)
			}
			e.Warn("appservice: transaction failed; will retry")
		}
		if !d.sleep(delay) {
			_ = msg.Nak()
			return
		}
	}
}

// delay is the wait after failure number attempt+1.
func (d *sender) delay(attempt int) time.Duration {
	delay := d.s.opts.RetryBase
	for i := 0; i < attempt && delay < d.s.opts.RetryMax; i++ {
		delay *= 2
	}
	return min(delay, d.s.opts.RetryMax)
}

// sleep waits; a poke ends it early. It reports false when the service
// stops.
func (d *sender) sleep(delay time.Duration) bool {
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-d.wake:
		return true
	case <-d.s.stop:
		return false
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
