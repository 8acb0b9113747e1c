package outbound

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/internal/metrics"
	"github.com/haven-chat/haven/storage"
)

// Sender sends one transaction to its destination: the method of
// gomatrixserverlib's fclient.FederationClient, which implements it.
type Sender interface {
	SendTransaction(ctx context.Context, t gomatrixserverlib.Transaction) (fclient.RespSend, error)
}

// RoomSource is what the feed asks of the roomserver.
type RoomSource interface {
	// Position is the last visible position of the events stream.
	Position() int64
	// JoinedServers are the servers of a room's joined members (current
	// state), ours included.
	JoinedServers(ctx context.Context, roomID string) ([]string, error)
}

// Bus is the part of the bus the queues need: the notices of the events
// stream, and JetStream for the durable queues.
type Bus interface {
	Subscribe(topic string, fn func(data []byte)) (func(), error)
	Conn() *nats.Conn
	Subject(topic string) string
}

// Options configure the queues. ServerName, DB, Bus, Rooms and Sender are
// required; zero limits and durations take their defaults.
type Options struct {
	ServerName string
	DB         *storage.DB
	Bus        Bus
	Rooms      RoomSource
	Sender     Sender
	// Refused tells that an error of the Sender means the destination is
	// refused for good (not in the federation allowlist): its queue is
	// dropped instead of retried. Nil: no error is.
	Refused func(err error) bool
	// MaxPDUs and MaxEDUs bound one transaction (the spec's 50 and 100).
	MaxPDUs, MaxEDUs int
	// CatchUpPDUs: after a destination failed, a room with more events
	// queued for it than this keeps only its newest CatchUpPDUs (50).
	CatchUpPDUs int
	// RetryBase is the wait after a failed transaction; it doubles with
	// each failure up to RetryMax, ±20% (defaults 1 s and 1 h).
	RetryBase, RetryMax time.Duration
	// SendTimeout bounds one attempt to send a transaction (60 s).
	SendTimeout time.Duration
	// EDUMaxAge is how long a queued EDU waits for its destination before
	// it is dropped (24 h). To-device EDUs are not (ToDeviceMaxAge).
	EDUMaxAge time.Duration
	// ToDeviceMaxAge is how long a queued to-device EDU (QueueToDevice)
	// waits for its destination; zero: until the destination takes it.
	ToDeviceMaxAge time.Duration
}

func (o *Options) defaults() {
	if o.MaxPDUs <= 0 {
		o.MaxPDUs = 50
	}
	if o.MaxEDUs <= 0 {
		o.MaxEDUs = 100
	}
	if o.CatchUpPDUs <= 0 {
		o.CatchUpPDUs = 50
	}
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = time.Hour
	}
	if o.SendTimeout <= 0 {
		o.SendTimeout = 60 * time.Second
	}
	if o.EDUMaxAge <= 0 {
		o.EDUMaxAge = 24 * time.Hour
	}
	if o.Refused == nil {
		o.Refused = func(error) bool { return false }
	}
}

var (
	txnAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "haven_federation_transactions_total",
		Help: "Attempts to send a federation transaction, by result (sent, retry, refused).",
	}, []string{"result"})
	pdusSkipped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "haven_federation_pdus_skipped_total",
		Help: "Queued events not sent to a destination that was behind (catch-up) or refused; it fetches the gap itself.",
	})
	queueDepth = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "haven_federation_queue_pdus",
		Help: "Events queued for a destination, as its sender last saw.",
	}, []string{"destination"})
)

func init() { metrics.Registry.MustRegister(txnAttempts, pdusSkipped, queueDepth) }

// Queues sends our users' room events and the EDUs given to QueueEDU to
// the other servers, through one durable queue per destination.
type Queues struct {
	opts             Options
	js               jetstream.JetStream
	pdus             jetstream.Stream
	edus             jetstream.Stream
	tdv              jetstream.Stream // to-device EDUs (todevice.go)
	pduSubj, eduSubj string           // subject bases
	tdvSubj          string
	// epoch makes this process's transaction IDs differ from earlier ones.
	epoch string
	log   *logrus.Entry

	// recent holds the federation JSON of our events just committed, so
	// that a destination keeping up is sent them without a query.
	recent *lru.Cache[string, json.RawMessage]

	mu      sync.Mutex
	workers map[string]*worker

	feed  *feed
	unsub func()
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// queuedPDU is a queued event, by reference: its JSON is read when it is
// sent (redacted by then, it goes redacted).
type queuedPDU struct {
	RoomID  string `json:"room_id"`
	EventID string `json:"event_id"`
}

// ackWait is how long a message taken by a sender that died stays away
// from the next one; a live sender renews it every third of it.
const ackWait = 30 * time.Second

// destHeader names a queued message's destination.
const destHeader = "Haven-Destination"

// New makes the queues' JetStream streams. Start starts them.
func New(ctx context.Context, opts Options) (*Queues, error) {
	if opts.ServerName == "" || opts.DB == nil || opts.Bus == nil || opts.Rooms == nil || opts.Sender == nil {
		return nil, errors.New("federation outbound: ServerName, DB, Bus, Rooms and Sender are required")
	}
	opts.defaults()
	js, err := jetstream.New(opts.Bus.Conn())
	if err != nil {
		return nil, fmt.Errorf("federation outbound queues: %w", err)
	}
	q := &Queues{opts: opts, js: js, pduSubj: opts.Bus.Subject("fed.out.pdu"), eduSubj: opts.Bus.Subject("fed.out.edu"),
		tdvSubj: opts.Bus.Subject("fed.out.tdv"),
		epoch:   strconv.FormatInt(time.Now().UnixMilli(), 36) + "-" + strconv.FormatUint(uint64(rand.Uint32()), 36), workers: map[string]*worker{}, stop: make(chan struct{}),
		recent: lru.New[string, json.RawMessage]("federation_outbound_events", 4096),
		log:    logging.From(ctx).WithField("component", "federation_outbound")}
	if q.pdus, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: streamName(q.pduSubj), Subjects: []string{q.pduSubj + ".>"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	}); err != nil {
		return nil, fmt.Errorf("federation outbound: events stream: %w", err)
	}
	if q.edus, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: streamName(q.eduSubj), Subjects: []string{q.eduSubj + ".*"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, MaxAge: opts.EDUMaxAge,
	}); err != nil {
		return nil, fmt.Errorf("federation outbound: EDU stream: %w", err)
	}
	if q.tdv, err = js.CreateOrUpdateStream(ctx, toDeviceStream(q.tdvSubj, opts.ToDeviceMaxAge)); err != nil {
		return nil, fmt.Errorf("federation outbound: to-device stream: %w", err)
	}
	return q, nil
}

func streamName(subject string) string {
	return strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(subject))
}

// Start starts a sender for each destination with something queued and
// the feed, which resumes from its stored position. The queue consumers
// are made anew: what an earlier run had taken and not acknowledged (the
// transaction in flight at a stop or a crash) comes first again, at once,
// not after its acknowledgement wait, and those of idle destinations go.
func (q *Queues) Start(ctx context.Context) error {
	for _, st := range []jetstream.Stream{q.pdus, q.edus, q.tdv} {
		l := st.ConsumerNames(ctx)
		var names []string
		for name := range l.Name() {
			names = append(names, name)
		}
		if err := l.Err(); err != nil {
			return fmt.Errorf("federation outbound: list queues: %w", err)
		}
		for _, name := range names {
			if err := st.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return fmt.Errorf("federation outbound: reset queue %s: %w", name, err)
			}
		}
	}
	// The streams tell which destinations have something queued: one
	// message of each names its destination.
	busy := map[string]bool{}
	for _, st := range []struct {
		s    jetstream.Stream
		base string
	}{{q.pdus, q.pduSubj}, {q.edus, q.eduSubj}, {q.tdv, q.tdvSubj}} {
		info, err := st.s.Info(ctx, jetstream.WithSubjectFilter(st.base+".>"))
		if err != nil {
			return fmt.Errorf("federation outbound: queued destinations: %w", err)
		}
		seen := map[string]bool{}
		for subj := range info.State.Subjects {
			key, _, _ := strings.Cut(strings.TrimPrefix(subj, st.base+"."), ".")
			if seen[key] {
				continue
			}
			seen[key] = true
			m, err := st.s.GetLastMsgForSubject(ctx, subj)
			if err != nil {
				return fmt.Errorf("federation outbound: queued destinations: %w", err)
			}
			if d := m.Header.Get(destHeader); d != "" && destKey(d) == key {
				busy[d] = true
			} else {
				q.log.WithField("subject", subj).Warn("federation outbound: queued messages of an unknown destination")
			}
		}
	}
	for d := range busy {
		if _, err := q.worker(ctx, d); err != nil {
			return err
		}
	}
	f := &feed{q: q, in: make(chan []byte, 4096)}
	q.feed = f
	if err := f.start(ctx); err != nil {
		q.Close()
		return err
	}
	return nil
}

// Close stops the feed and the senders. A transaction being sent is
// handed back to its queue and sent again, with the rest, at the next
// start.
func (q *Queues) Close() {
	q.once.Do(func() {
		if q.unsub != nil {
			q.unsub()
		}
		close(q.stop)
		if q.feed != nil && q.feed.follow != nil {
			q.feed.follow.Close()
		}
		q.wg.Wait()
		_ = q.opts.Bus.Conn().Flush()
	})
}

func (q *Queues) stopped() bool {
	select {
	case <-q.stop:
		return true
	default:
		return false
	}
}

// worker returns the destination's sender, creating its queue consumers
// and starting it on first use.
func (q *Queues) worker(ctx context.Context, dest string) (*worker, error) {
	q.mu.Lock()
	w := q.workers[dest]
	q.mu.Unlock()
	if w != nil {
		return w, nil
	}
	key := destKey(dest)
	cfg := jetstream.ConsumerConfig{Durable: key, Description: dest, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: ackWait, MaxDeliver: -1, MaxAckPending: 1000}
	cfg.FilterSubject = q.pduSubj + "." + key + ".>"
	pc, err := q.js.CreateOrUpdateConsumer(ctx, q.pdus.CachedInfo().Config.Name, cfg)
	if err != nil {
		return nil, fmt.Errorf("federation outbound: queue of %s: %w", dest, err)
	}
	cfg.FilterSubject = q.eduSubj + "." + key
	ec, err := q.js.CreateOrUpdateConsumer(ctx, q.edus.CachedInfo().Config.Name, cfg)
	if err != nil {
		return nil, fmt.Errorf("federation outbound: EDU queue of %s: %w", dest, err)
	}
	cfg.FilterSubject = q.tdvSubj + "." + key
	tc, err := q.js.CreateOrUpdateConsumer(ctx, q.tdv.CachedInfo().Config.Name, cfg)
	if err != nil {
		return nil, fmt.Errorf("federation outbound: to-device queue of %s: %w", dest, err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if w := q.workers[dest]; w != nil {
		return w, nil
	}
	if q.stopped() {
		return nil, errors.New("federation outbound: stopped")
	}
	w = newWorker(q, dest, key, pc, ec, tc)
	q.workers[dest] = w
	q.wg.Add(1)
	go w.run()
	return w, nil
}

// remote tells whether a server name is another server's.
func (q *Queues) remote(server string) bool {
	return server != "" && server != q.opts.ServerName && ids.ValidServerName(server)
}

// QueueEDU queues an EDU (typing, receipts, device list updates, ...) for
// each of the destinations (ours and invalid names are left out). EDUs are
// durable as the events are — they survive a restart — but one that has
// waited EDUMaxAge for its destination is dropped. They go out with the
// destination's next transaction, at most MaxEDUs in each.
func (q *Queues) QueueEDU(ctx context.Context, destinations []string, edu gomatrixserverlib.EDU) error {
	if edu.Origin == "" {
		edu.Origin = q.opts.ServerName
	}
	edu.Destination = ""
	data, err := json.Marshal(edu)
	if err != nil {
		return fmt.Errorf("encode EDU %s: %w", edu.Type, err)
	}
	for _, d := range destinations {
		if !q.remote(d) {
			continue
		}
		w, err := q.worker(ctx, d)
		if err != nil {
			return err
		}
		msg := &nats.Msg{Subject: q.eduSubj + "." + w.key, Data: data, Header: nats.Header{destHeader: []string{d}}}
		ack, err := q.js.PublishMsg(ctx, msg)
		if err != nil {
			return fmt.Errorf("queue EDU %s for %s: %w", edu.Type, d, err)
		}
		w.queued(&w.edusQueued, ack)
		w.poke()
	}
	return nil
}

// Retry ends the wait of a failing destination before its next attempt:
// call it when the server shows it is back (a request from it arrived).
func (q *Queues) Retry(destination string) {
	q.mu.Lock()
	w := q.workers[destination]
	q.mu.Unlock()
	if w != nil {
		select {
		case w.retry <- struct{}{}:
		default:
		}
	}
}
