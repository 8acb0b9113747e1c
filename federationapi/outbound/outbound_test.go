package outbound

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/haven-chat/haven/internal/bus"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

const local = "test"

type profiles struct{}

func (profiles) Profile(_ context.Context, userID string) (string, string, error) { return "", "", nil }

type accounts struct{}

func (accounts) IsGuest(context.Context, string) (bool, error)       { return false, nil }
func (accounts) AccountExists(context.Context, string) (bool, error) { return true, nil }

// relay is the roomserver's publisher: the test's current bus (a restart
// test swaps it); with none, notices are lost, as when NATS is away.
type relay struct {
	mu sync.Mutex
	b  *bus.Bus
}

func (r *relay) Publish(topic string, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b == nil {
		return errors.New("no bus")
	}
	return r.b.Publish(topic, data)
}

func (r *relay) set(b *bus.Bus) {
	r.mu.Lock()
	r.b = b
	r.mu.Unlock()
}

var errRefused = errors.New("destination not in the federation allowlist")

// recorder is a Sender that keeps what each destination received, as a
// server would: a transaction ID it has taken is answered again without
// being processed twice. A destination can be made to fail or to be
// refused.
type recorder struct {
	mu       sync.Mutex
	failing  map[string]error
	taken    map[string]map[gomatrixserverlib.TransactionID]bool
	attempts map[string][]gomatrixserverlib.TransactionID
	txns     map[string][]gomatrixserverlib.Transaction
	events   map[string][]string
	edus     map[string][]gomatrixserverlib.EDU
	bad      []string
}

func newRecorder() *recorder {
	return &recorder{failing: map[string]error{}, taken: map[string]map[gomatrixserverlib.TransactionID]bool{},
		attempts: map[string][]gomatrixserverlib.TransactionID{}, txns: map[string][]gomatrixserverlib.Transaction{},
		events: map[string][]string{}, edus: map[string][]gomatrixserverlib.EDU{}}
}

func (r *recorder) SendTransaction(_ context.Context, t gomatrixserverlib.Transaction) (fclient.RespSend, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	dest := string(t.Destination)
	r.attempts[dest] = append(r.attempts[dest], t.TransactionID)
	if err := r.failing[dest]; err != nil {
		return fclient.RespSend{}, fmt.Errorf("send to %s: %w", dest, err)
	}
	if t.Origin != local || t.TransactionID == "" || len(t.PDUs) > 50 || len(t.EDUs) > 100 {
		r.bad = append(r.bad, fmt.Sprintf("transaction %s: origin %s, %d PDUs, %d EDUs", t.TransactionID, t.Origin, len(t.PDUs), len(t.EDUs)))
	}
	if r.taken[dest] == nil {
		r.taken[dest] = map[gomatrixserverlib.TransactionID]bool{}
	}
	if r.taken[dest][t.TransactionID] {
		return fclient.RespSend{PDUs: map[string]fclient.PDUResult{}}, nil
	}
	r.taken[dest][t.TransactionID] = true
	r.txns[dest] = append(r.txns[dest], t)
	res := fclient.RespSend{PDUs: map[string]fclient.PDUResult{}}
	for _, js := range t.PDUs {
		if strings.Contains(string(js), `"unsigned"`) {
			r.bad = append(r.bad, "a PDU with unsigned data: "+string(js))
		}
		ev, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11).NewEventFromUntrustedJSON(js)
		if err != nil {
			r.bad = append(r.bad, fmt.Sprintf("PDU %s: %v", js, err))
			continue
		}
		r.events[dest] = append(r.events[dest], ev.EventID())
		res.PDUs[ev.EventID()] = fclient.PDUResult{}
	}
	for _, e := range t.EDUs {
		if e.Origin != local || e.Destination != dest {
			r.bad = append(r.bad, fmt.Sprintf("EDU %+v", e))
		}
		r.edus[dest] = append(r.edus[dest], e)
	}
	return res, nil
}

func (r *recorder) fail(dest string, err error) {
	r.mu.Lock()
	if err == nil {
		delete(r.failing, dest)
	} else {
		r.failing[dest] = err
	}
	r.mu.Unlock()
}

func (r *recorder) eventsOf(dest string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events[dest])
}

func (r *recorder) attemptsOf(dest string) []gomatrixserverlib.TransactionID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.attempts[dest])
}

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.bad {
		t.Error(b)
	}
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited in vain for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type env struct {
	t     *testing.T
	db    *storage.DB
	rs    *roomserver.Service
	relay *relay
	b     *bus.Bus
	dir   string
	rec   *recorder
	key   ed25519.PrivateKey
}

func newEnv(t *testing.T, db *storage.DB) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, db: db, relay: &relay{}, dir: t.TempDir(), rec: newRecorder()}
	_, e.key, _ = ed25519.GenerateKey(nil)
	e.startBus()
	t.Cleanup(func() {
		if e.b != nil {
			e.b.Close()
		}
	})
	key, err := serverkey.Load(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	e.rs, err = roomserver.New(ctx, db, e.relay, profiles{}, accounts{}, roomserver.Options{ServerName: local, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.rs.Close)
	return e
}

func (e *env) startBus() {
	b, err := bus.Start(context.Background(), bus.Options{StoreDir: e.dir, Namespace: local})
	if err != nil {
		e.t.Fatal(err)
	}
	e.b = b
	e.relay.set(b)
}

func (e *env) stopBus() {
	e.relay.set(nil)
	e.b.Close()
	e.b = nil
}

func (e *env) queues(opts Options) *Queues {
	e.t.Helper()
	ctx := context.Background()
	opts.ServerName, opts.DB, opts.Bus, opts.Rooms = local, e.db, e.b, e.rs
	if opts.Sender == nil {
		opts.Sender = e.rec
	}
	if opts.RetryBase == 0 {
		opts.RetryBase, opts.RetryMax = 5*time.Millisecond, 50*time.Millisecond
	}
	if opts.Refused == nil {
		opts.Refused = func(err error) bool { return errors.Is(err, errRefused) }
	}
	q, err := New(ctx, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := q.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(q.Close)
	return q
}

// room creates a public room of @alice:test that the remote users join.
func (e *env) room(remotes ...string) string {
	e.t.Helper()
	res, err := e.rs.CreateRoom(context.Background(), "@alice:test", roomserver.CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, u := range remotes {
		e.remote(res.RoomID, u, "m.room.member", &u, `{"membership":"join"}`)
	}
	return res.RoomID
}

// remote inputs an event of another server's user, as it arrives over
// federation; it returns its ID.
func (e *env) remote(roomID, sender, typ string, stateKey *string, content string) string {
	e.t.Helper()
	ctx := context.Background()
	ver, err := e.rs.RoomVersion(ctx, roomID)
	if err != nil {
		e.t.Fatal(err)
	}
	rv := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(ver))
	state, err := e.rs.CurrentState(ctx, roomID)
	if err != nil {
		e.t.Fatal(err)
	}
	auth, _ := gomatrixserverlib.NewAuthEvents(nil)
	for _, ev := range state {
		pdu, err := rv.NewEventFromTrustedJSON(ev.JSON, false)
		if err != nil {
			e.t.Fatal(err)
		}
		_ = auth.AddEvent(pdu)
	}
	ext, err := e.rs.Extremities(ctx, roomID)
	if err != nil {
		e.t.Fatal(err)
	}
	var depth int64
	for _, id := range ext {
		ev, err := e.rs.GetEvent(ctx, id)
		if err != nil {
			e.t.Fatal(err)
		}
		depth = max(depth, ev.Depth)
	}
	b := rv.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey,
		Content: spec.RawJSON(content), PrevEvents: ext, Depth: depth + 1})
	if err := b.AddAuthEvents(auth); err != nil {
		e.t.Fatal(err)
	}
	_, server, _ := strings.Cut(sender, ":")
	pdu, err := b.Build(time.Now(), spec.ServerName(server), "ed25519:1", e.key)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.rs.InputEvent(ctx, pdu); err != nil {
		e.t.Fatalf("input %s from %s: %v", typ, sender, err)
	}
	return pdu.EventID()
}

func (e *env) say(roomID, body string) string {
	e.t.Helper()
	id, err := e.rs.Send(context.Background(), roomserver.Sender{UserID: "@alice:test", DeviceID: "D"}, roomserver.SendRequest{RoomID: roomID,
		Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"` + body + `"}`), TxnID: body})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// queued is the number of events in a destination's queue.
func queued(t *testing.T, q *Queues, dest string) uint64 {
	t.Helper()
	info, err := q.pdus.Info(context.Background(), jetstream.WithSubjectFilter(q.pduSubj+"."+destKey(dest)+".>"))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// TestDelivery: our users' events reach every server with joined members
// once and in order (a redaction too, a kick also the kicked user's
// server); other servers' events and what was sent before the first start
// are not sent.
func TestDelivery(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		roomID := e.room("@r1:a.example", "@r2:a.example", "@r3:b.example:8448")
		e.queues(Options{})
		var want []string
		for i := 0; i < 30; i++ {
			want = append(want, e.say(roomID, fmt.Sprintf("m%d", i)))
			if i == 10 {
				// Another server's message: not ours to send.
				e.remote(roomID, "@r1:a.example", "m.room.message", nil, `{"msgtype":"m.text","body":"from a"}`)
			}
		}
		red, err := e.rs.Redact(ctx, roomserver.Sender{UserID: "@alice:test", DeviceID: "D"}, roomID, want[3], "", "red")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, red)
		if err := e.rs.Kick(ctx, "@alice:test", roomID, "@r3:b.example:8448", "bye"); err != nil {
			t.Fatal(err)
		}
		kick, err := e.rs.CurrentStateEvent(ctx, roomID, "m.room.member", "@r3:b.example:8448")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, kick.EventID)
		after := e.say(roomID, "after the kick")
		for _, dest := range []string{"a.example", "b.example:8448"} {
			exp := want
			if dest == "a.example" {
				exp = append(slices.Clone(want), after)
			}
			waitFor(t, dest+" to get every event", func() bool { return len(e.rec.eventsOf(dest)) >= len(exp) })
			if got := e.rec.eventsOf(dest); !slices.Equal(got, exp) {
				t.Fatalf("%s got %d events %v\nwant %d %v", dest, len(got), got, len(exp), exp)
			}
		}
		// Nothing else arrives: one more message is the next thing a.example gets.
		last := e.say(roomID, "last")
		waitFor(t, "the last message", func() bool { return slices.Contains(e.rec.eventsOf("a.example"), last) })
		if got := e.rec.eventsOf("a.example"); len(got) != len(want)+2 {
			t.Fatalf("a.example got %d events, want %d", len(got), len(want)+2)
		}
		if got := e.rec.eventsOf("b.example:8448"); len(got) != len(want) {
			t.Fatalf("b.example got events after it left: %d", len(got))
		}
		if n := len(e.rec.attemptsOf(local)); n != 0 {
			t.Fatalf("%d transactions to ourselves", n)
		}
		e.rec.check(t)
	})
}

// TestRetryAndRefusal: a failing destination gets its transaction again
// under the same ID until it takes it, and holds nobody up; a refused one
// is not retried and its queue is dropped.
func TestRetryAndRefusal(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		roomID := e.room("@r1:a.example", "@r2:b.example", "@r3:c.example")
		e.rec.fail("a.example", errors.New("connection refused"))
		e.rec.fail("c.example", errRefused)
		q := e.queues(Options{})
		var want []string
		for i := 0; i < 5; i++ {
			want = append(want, e.say(roomID, fmt.Sprintf("m%d", i)))
		}
		waitFor(t, "b.example to get every event", func() bool { return len(e.rec.eventsOf("b.example")) == len(want) })
		waitFor(t, "retries to a.example", func() bool { return len(e.rec.attemptsOf("a.example")) >= 3 })
		first := e.rec.attemptsOf("a.example")
		for _, id := range first {
			if id != first[0] {
				t.Fatalf("a.example's transaction was retried under other IDs: %v", first)
			}
		}
		e.rec.fail("a.example", nil)
		q.Retry("a.example")
		waitFor(t, "a.example to get every event", func() bool { return len(e.rec.eventsOf("a.example")) >= len(want) })
		if got := e.rec.eventsOf("a.example"); !slices.Equal(got, want) {
			t.Fatalf("a.example got %v, want %v", got, want)
		}
		e.rec.mu.Lock()
		firstTaken := e.rec.txns["a.example"][0].TransactionID
		e.rec.mu.Unlock()
		if firstTaken != first[0] {
			t.Fatalf("the transaction taken first is %s, the one tried is %s", firstTaken, first[0])
		}
		// c.example: every transaction tried once, the queue emptied.
		waitFor(t, "c.example's queue to be dropped", func() bool { return queued(t, q, "c.example") == 0 })
		seen := map[gomatrixserverlib.TransactionID]bool{}
		for _, id := range e.rec.attemptsOf("c.example") {
			if seen[id] {
				t.Fatalf("a refused destination's transaction %s was retried", id)
			}
			seen[id] = true
		}
		if len(e.rec.eventsOf("c.example")) != 0 {
			t.Fatal("c.example got events")
		}
		e.rec.check(t)
	})
}

// TestRestart: what was queued when the queues stopped, and what was
// committed while they were stopped (with the bus down too), arrives after
// a new start on the same database and store, once each and in order.
func TestRestart(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		roomID := e.room("@r1:a.example", "@r2:b.example")
		e.rec.fail("a.example", errors.New("connection refused"))
		q := e.queues(Options{})
		var want []string
		for i := 0; i < 3; i++ {
			want = append(want, e.say(roomID, fmt.Sprintf("before%d", i)))
		}
		waitFor(t, "b.example to get the first events", func() bool { return len(e.rec.eventsOf("b.example")) == 3 })
		waitFor(t, "a.example's retries", func() bool { return len(e.rec.attemptsOf("a.example")) >= 2 })
		waitFor(t, "a.example's queue", func() bool { return queued(t, q, "a.example") == 3 })
		q.Close()
		// Committed while the queues (and then the bus) are down.
		want = append(want, e.say(roomID, "down0"))
		e.stopBus()
		want = append(want, e.say(roomID, "down1"))
		e.startBus()
		e.rec.fail("a.example", nil)
		e.queues(Options{})
		want = append(want, e.say(roomID, "after"))
		for _, dest := range []string{"a.example", "b.example"} {
			waitFor(t, dest+" to get every event", func() bool { return len(e.rec.eventsOf(dest)) >= len(want) })
		}
		// One more, to be sure nothing else was on its way.
		want = append(want, e.say(roomID, "last"))
		for _, dest := range []string{"a.example", "b.example"} {
			waitFor(t, dest+" to get the last event", func() bool { return len(e.rec.eventsOf(dest)) >= len(want) })
			if got := e.rec.eventsOf(dest); !slices.Equal(got, want) {
				t.Fatalf("%s got %v\nwant %v", dest, got, want)
			}
		}
		e.rec.check(t)
	})
}

// TestCatchUp: a destination that comes back after failing gets, of each
// room with more than CatchUpPDUs events queued, only the newest ones.
func TestCatchUp(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		big := e.room("@r1:a.example")
		small := e.room("@r1:a.example")
		e.rec.fail("a.example", errors.New("connection refused"))
		q := e.queues(Options{CatchUpPDUs: 5})
		first := e.say(big, "first")
		waitFor(t, "the first transaction", func() bool { return len(e.rec.attemptsOf("a.example")) >= 1 })
		var bigIDs, smallIDs []string
		for i := 0; i < 20; i++ {
			bigIDs = append(bigIDs, e.say(big, fmt.Sprintf("big%d", i)))
		}
		for i := 0; i < 3; i++ {
			smallIDs = append(smallIDs, e.say(small, fmt.Sprintf("small%d", i)))
		}
		// The first transaction is in flight, the others queued.
		waitFor(t, "the events to be queued", func() bool { return queued(t, q, "a.example") == 24 })
		e.rec.fail("a.example", nil)
		q.Retry("a.example")
		want := append([]string{first}, bigIDs[15:]...)
		want = append(want, smallIDs...)
		waitFor(t, "a.example to catch up", func() bool { return len(e.rec.eventsOf("a.example")) >= len(want) })
		waitFor(t, "the queue to be empty", func() bool { return queued(t, q, "a.example") == 0 })
		got := e.rec.eventsOf("a.example")
		if len(got) != len(want) || got[0] != first {
			t.Fatalf("a.example got %v\nwant %v in some order after the first", got, want)
		}
		// Each room's events in order; rooms may interleave.
		var gotBig, gotSmall []string
		for _, id := range got[1:] {
			if slices.Contains(bigIDs, id) {
				gotBig = append(gotBig, id)
			} else {
				gotSmall = append(gotSmall, id)
			}
		}
		if !slices.Equal(gotBig, bigIDs[15:]) || !slices.Equal(gotSmall, smallIDs) {
			t.Fatalf("after catching up: big room %v (want %v), small room %v (want %v)", gotBig, bigIDs[15:], gotSmall, smallIDs)
		}
		// Then events flow one by one again.
		next := e.say(big, "next")
		waitFor(t, "the next event", func() bool { return slices.Contains(e.rec.eventsOf("a.example"), next) })
		e.rec.check(t)
	})
}

// TestEDUs: EDUs queued for a destination go out in its transactions, at
// most MaxEDUs in each, in order, once each; ours and invalid names are
// left out.
func TestEDUs(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		e.rec.fail("a.example", errors.New("connection refused"))
		q := e.queues(Options{})
		const n = 250
		for i := 0; i < n; i++ {
			edu := gomatrixserverlib.EDU{Type: "m.receipt", Content: spec.RawJSON(fmt.Sprintf(`{"n":%d}`, i))}
			if err := q.QueueEDU(ctx, []string{"a.example", local, "not a server"}, edu); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "a failed attempt", func() bool { return len(e.rec.attemptsOf("a.example")) >= 1 })
		e.rec.fail("a.example", nil)
		q.Retry("a.example")
		waitFor(t, "every EDU", func() bool {
			e.rec.mu.Lock()
			defer e.rec.mu.Unlock()
			return len(e.rec.edus["a.example"]) >= n
		})
		e.rec.mu.Lock()
		defer e.rec.mu.Unlock()
		for i, edu := range e.rec.edus["a.example"] {
			if string(edu.Content) != fmt.Sprintf(`{"n":%d}`, i) || edu.Type != "m.receipt" {
				t.Fatalf("EDU %d is %s %s", i, edu.Type, edu.Content)
			}
		}
		if len(e.rec.edus["a.example"]) != n {
			t.Fatalf("%d EDUs arrived, want %d", len(e.rec.edus["a.example"]), n)
		}
		// The first transaction held whatever was queued then; the rest
		// came in full ones.
		txns := e.rec.txns["a.example"]
		if len(txns) > 4 {
			t.Fatalf("%d transactions for %d EDUs", len(txns), n)
		}
		if len(e.rec.attempts[local]) != 0 {
			t.Fatal("EDUs sent to ourselves")
		}
		for _, b := range e.rec.bad {
			t.Error(b)
		}
	})
}
