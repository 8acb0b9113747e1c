package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/metrics"
	"github.com/haven-chat/haven/internal/netguard"
)

// pushAttempts counts the attempts to send a push, by result.
var pushAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "haven_push_attempts_total",
	Help: "Attempts to send a push to a push gateway, by result (sent, retry, dropped, rejected).",
}, []string{"result"})

func init() { metrics.Registry.MustRegister(pushAttempts) }

// DeliverTopic is the bus topic of the durable push queue (a JetStream
// work-queue stream).
const DeliverTopic = "push.deliver"

// gwNotification is the notification of the Push Gateway API
// (POST /_matrix/push/v1/notify). Every field the spec lists is filled in
// when known; user_is_target (and membership, which Synapse adds) only for
// member events. The devices are added when it is sent.
type gwNotification struct {
	EventID           string          `json:"event_id,omitempty"`
	RoomID            string          `json:"room_id,omitempty"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	Membership        string          `json:"membership,omitempty"`
	UserIsTarget      *bool           `json:"user_is_target,omitempty"`
	Prio              string          `json:"prio,omitempty"`
	Content           json.RawMessage `json:"content,omitempty"`
	Counts            gwCounts        `json:"counts"`
	Devices           []gwDevice      `json:"devices"`
}

// gwCounts are the badge counts; the spec asks to omit those that are zero.
type gwCounts struct {
	// Unread is the number of rooms with unread notifications.
	Unread int `json:"unread,omitempty"`
	// MissedCalls is the number of unread call invites (m.call.invite).
	MissedCalls int `json:"missed_calls,omitempty"`
}

type gwDevice struct {
	AppID     string                     `json:"app_id"`
	Pushkey   string                     `json:"pushkey"`
	PushkeyTS int64                      `json:"pushkey_ts,omitempty"`
	Data      map[string]json.RawMessage `json:"data,omitempty"`
	Tweaks    map[string]any             `json:"tweaks,omitempty"`
}

// pushJob is one queued push: one notification for one pusher.
type pushJob struct {
	UserID       string         `json:"user_id"`
	AppID        string         `json:"app_id"`
	Pushkey      string         `json:"pushkey"`
	Notification gwNotification `json:"notification"`
	Tweaks       map[string]any `json:"tweaks,omitempty"`
}

// pushesFor adds the pushes of a notification of user to list, one per
// http pusher of the user.
func (s *Service) pushesFor(list []pushJob, user string, pe *Event, act *Actions, ri *roomInfo) []pushJob {
	if !s.hasHTTPPushers(user) {
		return list
	}
	n := gwNotification{EventID: pe.ID, RoomID: pe.RoomID, Type: pe.Type, Sender: pe.Sender,
		SenderDisplayName: ri.members[pe.Sender].name, RoomName: ri.name, RoomAlias: ri.alias, Content: pe.Content, Prio: "low"}
	if pe.Type == "m.room.member" && pe.StateKey != nil {
		var c struct {
			Membership string `json:"membership"`
		}
		_ = json.Unmarshal(pe.Content, &c)
		target := *pe.StateKey == user
		n.Membership, n.UserIsTarget = c.Membership, &target
	}
	tweaks := map[string]any{}
	if act.Highlight {
		tweaks["highlight"] = true
	}
	if act.Sound != "" {
		tweaks["sound"] = act.Sound
	}
	if act.Highlight || act.Sound != "" || pe.Type == "m.room.encrypted" {
		n.Prio = "high"
	}
	n.Counts.Unread, n.Counts.MissedCalls = s.counts.badge(user)
	for _, p := range s.pushers.of(user) {
		if p.Kind == "http" {
			list = append(list, pushJob{UserID: user, AppID: p.AppID, Pushkey: p.Pushkey, Notification: n, Tweaks: tweaks})
		}
	}
	return list
}

// deliverer sends queued pushes to push gateways: a durable JetStream
// consumer, a few requests at a time, retries with exponential backoff.
type deliverer struct {
	s       *Service
	js      jetstream.JetStream
	subject string
	cc      jetstream.ConsumeContext
	client  *http.Client
	sem     chan struct{}
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

// maxInFlight bounds the pushes being sent at once.
const maxInFlight = 8

func streamName(subject string) string {
	return strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(subject))
}

func newDeliverer(ctx context.Context, s *Service, b Bus) (*deliverer, error) {
	js, err := jetstream.New(b.Conn())
	if err != nil {
		return nil, fmt.Errorf("push queue: %w", err)
	}
	subject := b.Subject(DeliverTopic)
	name := streamName(subject)
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{subject}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, MaxAge: 24 * time.Hour,
	}); err != nil {
		return nil, fmt.Errorf("push queue stream %s: %w", name, err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{
		Durable: "push_sender", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: s.opts.GatewayTimeout + 5*time.Second, MaxAckPending: 4 * maxInFlight,
	})
	if err != nil {
		return nil, fmt.Errorf("push queue consumer: %w", err)
	}
	client := s.opts.HTTPClient
	if client == nil {
		// Gateways are URLs users give: the client never connects to this
		// host or the internal network unless push.gateway_allowed_ranges
		// names the range, and follows no redirects.
		policy := netguard.Policy{Allowed: s.opts.GatewayAllowed, Hint: "allow it with push.gateway_allowed_ranges"}
		client = &http.Client{Timeout: s.opts.GatewayTimeout, Transport: policy.Transport(s.opts.GatewayTimeout),
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	d := &deliverer{s: s, js: js, subject: subject, client: client, sem: make(chan struct{}, maxInFlight)}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if d.cc, err = cons.Consume(d.handle); err != nil {
		d.cancel()
		return nil, fmt.Errorf("push queue consume: %w", err)
	}
	return d, nil
}

func (d *deliverer) close() {
	d.cc.Stop()
	d.cancel()
	d.wg.Wait()
}

// publish queues a push (after its notification is stored).
func (d *deliverer) publish(ctx context.Context, job *pushJob) {
	data, err := json.Marshal(job)
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = d.js.Publish(pctx, d.subject, data)
		cancel()
	}
	if err != nil {
		logging.From(ctx).WithError(err).WithFields(logrus.Fields{"user_id": job.UserID, "event_id": job.Notification.EventID}).Error("push: queue push")
	}
}

func (d *deliverer) handle(msg jetstream.Msg) {
	select {
	case d.sem <- struct{}{}:
	case <-d.ctx.Done():
		return // not acknowledged: delivered again after a restart
	}
	d.wg.Add(1)
	go func() {
		defer func() { <-d.sem; d.wg.Done() }()
		d.deliver(msg)
	}()
}

// backoff is the delay before attempt n+1 after n failed ones.
func (d *deliverer) backoff(n uint64) time.Duration {
	delay := d.s.opts.RetryBase
	for i := uint64(1); i < n && delay < d.s.opts.RetryMax; i++ {
		delay *= 2
	}
	return min(delay, d.s.opts.RetryMax)
}

func (d *deliverer) deliver(msg jetstream.Msg) {
	ctx := d.ctx
	var job pushJob
	if err := json.Unmarshal(msg.Data(), &job); err != nil {
		logging.From(ctx).WithError(err).Error("push: bad queued push dropped")
		_ = msg.Term()
		return
	}
	log := logging.From(ctx).WithFields(logrus.Fields{"user_id": job.UserID, "event_id": job.Notification.EventID, "app_id": job.AppID})
	p := d.s.pushers.find(job.UserID, job.AppID, job.Pushkey)
	if p == nil || p.Kind != "http" {
		_ = msg.Ack() // the pusher is gone
		return
	}
	attempt := uint64(1)
	if md, err := msg.Metadata(); err == nil {
		attempt = md.NumDelivered
	}
	status, rejected, err := d.post(ctx, p, &job)
	switch {
	case err == nil && status/100 == 2:
		if slices.Contains(rejected, p.Pushkey) {
			pushAttempts.WithLabelValues("rejected").Inc()
			d.s.removeRejected(ctx, job.UserID, job.AppID, job.Pushkey)
		} else {
			pushAttempts.WithLabelValues("sent").Inc()
		}
		_ = msg.Ack()
	case err == nil && status/100 == 4 && status != http.StatusTooManyRequests:
		log.WithField("status", status).Warn("push: gateway refused the push; dropped")
		pushAttempts.WithLabelValues("dropped").Inc()
		_ = msg.Ack()
	case errors.Is(err, netguard.ErrBlocked):
		// Trying again reaches the same address: nothing was sent.
		log.WithError(err).Warn("push: gateway address not allowed; push dropped")
		pushAttempts.WithLabelValues("dropped").Inc()
		_ = msg.Term()
	default:
		if ctx.Err() != nil {
			return // shutting down: delivered again after the restart
		}
		if int(attempt) >= d.s.opts.MaxAttempts {
			log.WithError(err).WithField("status", status).Error("push: gateway still failing; push dropped")
			pushAttempts.WithLabelValues("dropped").Inc()
			_ = msg.Term()
			return
		}
		pushAttempts.WithLabelValues("retry").Inc()
		delay := d.backoff(attempt)
		log.WithError(err).WithFields(logrus.Fields{"status": status, "attempt": attempt, "retry_in": delay.String()}).Warn("push: gateway failed; will retry")
		_ = msg.NakWithDelay(delay)
	}
}

// post sends one notification to the pusher's gateway and returns the
// status and the rejected pushkeys.
func (d *deliverer) post(ctx context.Context, p *Pusher, job *pushJob) (int, []string, error) {
	n := job.Notification
	dev := gwDevice{AppID: p.AppID, Pushkey: p.Pushkey, PushkeyTS: p.pushkeyTS, Tweaks: job.Tweaks}
	var data map[string]json.RawMessage
	if json.Unmarshal(p.Data, &data) == nil {
		delete(data, "url")
		if len(data) > 0 {
			dev.Data = data
		}
	}
	if p.format == "event_id_only" {
		// The spec's reduced form: the event and room IDs and the counts
		// (and the priority, which tells the gateway how to wake the device).
		n = gwNotification{EventID: n.EventID, RoomID: n.RoomID, Counts: n.Counts, Prio: n.Prio}
	}
	n.Devices = []gwDevice{dev}
	body, err := json.Marshal(map[string]any{"notification": n})
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var out struct {
		Rejected []string `json:"rejected"`
	}
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out.Rejected, nil
}
