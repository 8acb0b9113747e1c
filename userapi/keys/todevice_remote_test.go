package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// queuedEDU is one EDU given to the fake outbound queue.
type queuedEDU struct {
	server, id string
	edu        toDeviceEDU
}

// fakeQueue is the federation's outbound queue: it keeps what it was
// given, and fails while failing is set.
type fakeQueue struct {
	mu       sync.Mutex
	edus     []queuedEDU
	attempts []string // message IDs, failed ones too
	failing  bool
}

func (q *fakeQueue) QueueToDevice(_ context.Context, server, messageID string, content json.RawMessage) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.attempts = append(q.attempts, messageID)
	if q.failing {
		return errors.New("JetStream is away")
	}
	if server == "refused.example" {
		return ErrServerNotAllowed
	}
	var e toDeviceEDU
	if err := json.Unmarshal(content, &e); err != nil {
		return err
	}
	q.edus = append(q.edus, queuedEDU{server, messageID, e})
	return nil
}

func (q *fakeQueue) take() []queuedEDU {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.edus
	q.edus = nil
	return out
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newRemoteService(t *testing.T, db *storage.DB, opts Options) (*Service, *fakeBus) {
	t.Helper()
	bus := &fakeBus{}
	opts.ServerName = "x"
	s, err := New(context.Background(), db, bus, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, bus
}

// inbox reads a device's queued messages as "sender type content".
func inbox(t *testing.T, s *Service, user, device string) []string {
	t.Helper()
	evs, _, err := s.ToDeviceMessages(context.Background(), user, device, 0, s.ToDevicePosition(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, raw := range evs {
		var ev struct {
			Sender  string          `json:"sender"`
			Type    string          `json:"type"`
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev.Sender+" "+ev.Type+" "+string(ev.Content))
	}
	return out
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

// TestToDeviceToOtherServers: a send's messages for other servers' users
// become one EDU per server, queued before the send returns, under message
// IDs derived from the sending device and transaction ID; a repeated send
// queues nothing; a send whose queueing failed is queued again, under the
// same IDs, when the client retries; large sends are split.
func TestToDeviceToOtherServers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		q := &fakeQueue{}
		s, _ := newRemoteService(t, db, Options{ToDeviceOut: q})
		addDevice(t, db, "@a:x", "A1", "")
		addDevice(t, db, "@b:x", "B1", "")
		msgs := map[string]map[string]json.RawMessage{
			"@b:x":           {"B1": raw(`{"to":"b"}`)},
			"@c:one.example": {"*": raw(`{"to": "c"}`)},
			"@d:one.example": {"D1": raw(`{"to":"d1"}`), "D2": raw(`{"to":"d2"}`)},
			"@e:two.example": {"E1": raw(`{"to":"e"}`)},
			// Outside the allowlist: dropped, the rest sent.
			"@r:refused.example": {"R1": raw(`{"to":"r"}`)},
		}
		if err := s.SendToDevice(ctx, "@a:x", "A1", "m.room_key", "t1", msgs); err != nil {
			t.Fatal(err)
		}
		got := q.take()
		if len(got) != 2 || got[0].server != "one.example" || got[1].server != "two.example" {
			t.Fatalf("queued %+v", got)
		}
		id := got[0].id
		if len(id) == 0 || len(id) > 32 || got[1].id != id {
			t.Fatalf("message IDs %q %q", got[0].id, got[1].id)
		}
		one := got[0].edu
		if one.Sender != "@a:x" || one.Type != "m.room_key" || one.MessageID != id || len(one.Messages) != 2 ||
			string(one.Messages["@c:one.example"]["*"]) != `{"to":"c"}` || string(one.Messages["@d:one.example"]["D2"]) != `{"to":"d2"}` {
			t.Fatalf("EDU for one.example %+v", one)
		}
		if e := got[1].edu; len(e.Messages) != 1 || string(e.Messages["@e:two.example"]["E1"]) != `{"to":"e"}` {
			t.Fatalf("EDU for two.example %+v", e)
		}
		if b := inbox(t, s, "@b:x", "B1"); len(b) != 1 {
			t.Fatalf("B1 has %v", b)
		}

		// The same transaction again: nothing queued, nothing delivered.
		if err := s.SendToDevice(ctx, "@a:x", "A1", "m.room_key", "t1", msgs); err != nil {
			t.Fatal(err)
		}
		if got := q.take(); len(got) != 0 {
			t.Fatalf("a repeated send queued %+v", got)
		}
		if b := inbox(t, s, "@b:x", "B1"); len(b) != 1 {
			t.Fatalf("B1 has %v after a repeated send", b)
		}

		// The queue fails: the send fails and records nothing; the retry
		// queues the same message ID.
		q.mu.Lock()
		q.failing = true
		q.mu.Unlock()
		if err := s.SendToDevice(ctx, "@a:x", "A1", "m.room_key", "t2", msgs); err == nil {
			t.Fatal("a send whose queueing failed succeeded")
		}
		if b := inbox(t, s, "@b:x", "B1"); len(b) != 1 {
			t.Fatalf("B1 has %v after a failed send", b)
		}
		q.mu.Lock()
		q.failing = false
		failedID := q.attempts[len(q.attempts)-1]
		q.mu.Unlock()
		if failedID == id {
			t.Fatal("two transactions got the same message ID")
		}
		if err := s.SendToDevice(ctx, "@a:x", "A1", "m.room_key", "t2", msgs); err != nil {
			t.Fatal(err)
		}
		got = q.take()
		if len(got) != 2 || got[0].id != failedID {
			t.Fatalf("retried send queued %+v, want ID %s", got, failedID)
		}
		if b := inbox(t, s, "@b:x", "B1"); len(b) != 2 {
			t.Fatalf("B1 has %v after the retry", b)
		}

		// Another device of the same user with the same transaction ID
		// gets other message IDs.
		addDevice(t, db, "@a:x", "A2", "")
		if err := s.SendToDevice(ctx, "@a:x", "A2", "m.room_key", "t1", map[string]map[string]json.RawMessage{"@e:two.example": {"E1": raw(`{}`)}}); err != nil {
			t.Fatal(err)
		}
		if got := q.take(); len(got) != 1 || got[0].id == id {
			t.Fatalf("other device's send %+v", got)
		}

		// A large send is split into EDUs of about ToDeviceEDUBytes, the
		// same way every time, every message in exactly one of them.
		big := map[string]map[string]json.RawMessage{"@g:one.example": {}}
		content := raw(`{"ciphertext":"` + strings.Repeat("x", 1000) + `"}`)
		for i := 0; i < 300; i++ {
			big["@g:one.example"][fmt.Sprintf("G%03d", i)] = content
		}
		if err := s.SendToDevice(ctx, "@a:x", "A1", "m.room.encrypted", "t3", big); err != nil {
			t.Fatal(err)
		}
		got = q.take()
		if len(got) < 4 || len(got) > 6 {
			t.Fatalf("300 KiB in %d EDUs", len(got))
		}
		seen := map[string]bool{}
		for i, e := range got {
			js, _ := json.Marshal(e.edu)
			if len(js) > ToDeviceEDUBytes+MaxToDeviceContentBytes {
				t.Fatalf("EDU %d has %d bytes", i, len(js))
			}
			if want := got[0].id; i > 0 && e.id != fmt.Sprintf("%s.%d", want, i) || len(e.id) > 32 {
				t.Fatalf("EDU %d has ID %s", i, e.id)
			}
			for d := range e.edu.Messages["@g:one.example"] {
				if seen[d] {
					t.Fatalf("%s in two EDUs", d)
				}
				seen[d] = true
			}
		}
		if len(seen) != 300 {
			t.Fatalf("%d of 300 messages queued", len(seen))
		}

		// Devices of other servers count towards the limit of a send.
		tooMany := map[string]map[string]json.RawMessage{"@g:one.example": {}}
		for i := 0; i <= MaxToDeviceTargets; i++ {
			tooMany["@g:one.example"][fmt.Sprint(i)] = raw(`{}`)
		}
		if err := s.SendToDevice(ctx, "@a:x", "A1", "m.x", "t4", tooMany); errcode(err) != "M_TOO_LARGE" {
			t.Fatalf("too many devices: %v", err)
		}
		if err := s.SendToDevice(ctx, "@a:x", "A1", "m.x", "t5", map[string]map[string]json.RawMessage{"@g:one.example": {"": raw(`{}`)}}); errcode(err) != "M_INVALID_PARAM" {
			t.Fatalf("empty device ID: %v", err)
		}
		if got := q.take(); len(got) != 0 {
			t.Fatalf("refused sends queued %+v", got)
		}
	})
}

// TestReceiveToDevice: an EDU of another server reaches our users'
// devices ("*": all of them) once per origin and message ID, until the ID
// is forgotten after InboundToDeviceRetention.
func TestReceiveToDevice(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		c := &clock{t: time.UnixMilli(1_800_000_000_000)}
		s, bus := newRemoteService(t, db, Options{Now: c.now})
		addDevice(t, db, "@a:x", "A1", "")
		addDevice(t, db, "@b:x", "B1", "")
		addDevice(t, db, "@b:x", "B2", "")
		msgs := map[string]map[string]json.RawMessage{
			"@b:x":             {"*": raw(`{"n": 1}`), "B2": raw(`{"n":2}`)},
			"@a:x":             {"A1": raw(`{"n":3}`), "GONE": raw(`{}`)},
			"@z:one.example":   {"Z": raw(`{}`)},
			"@nobody:x":        {"*": raw(`{}`)},
			"not a user":       {"*": raw(`{}`)},
			"@a:x\x00":         {"A1": raw(`{}`)},
			"@stranger:x.test": {"A1": raw(`{}`)},
		}
		if err := s.ReceiveToDevice(ctx, "one.example", "@c:one.example", "m.room_key", "m1", msgs); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"B1": `{"n":1}`, "B2": `{"n":2}`}
		for d, content := range want {
			if got := inbox(t, s, "@b:x", d); len(got) != 1 || got[0] != "@c:one.example m.room_key "+content {
				t.Fatalf("%s has %v", d, got)
			}
		}
		if got := inbox(t, s, "@a:x", "A1"); len(got) != 1 || got[0] != `@c:one.example m.room_key {"n":3}` {
			t.Fatalf("A1 has %v", got)
		}
		if bus.count(TopicToDevice) != 1 {
			t.Fatalf("%d notices", bus.count(TopicToDevice))
		}

		// The same EDU again (the origin retried its transaction): nothing.
		if err := s.ReceiveToDevice(ctx, "one.example", "@c:one.example", "m.room_key", "m1", msgs); err != nil {
			t.Fatal(err)
		}
		if got := inbox(t, s, "@b:x", "B1"); len(got) != 1 {
			t.Fatalf("B1 has %v after the repeat", got)
		}
		if bus.count(TopicToDevice) != 1 {
			t.Fatalf("%d notices after the repeat", bus.count(TopicToDevice))
		}
		// The same message ID from another server is another message.
		if err := s.ReceiveToDevice(ctx, "two.example", "@e:two.example", "m.x", "m1", map[string]map[string]json.RawMessage{"@b:x": {"B1": raw(`{}`)}}); err != nil {
			t.Fatal(err)
		}
		if got := inbox(t, s, "@b:x", "B1"); len(got) != 2 || got[1] != "@e:two.example m.x {}" {
			t.Fatalf("B1 has %v", got)
		}

		// Unusable EDUs are refused with Matrix errors; unusable contents
		// are left out and the rest delivered.
		ok := map[string]map[string]json.RawMessage{"@b:x": {"B1": raw(`{}`)}}
		for _, tc := range []struct {
			name, origin, sender, typ, id, code string
		}{
			{"sender of another server", "one.example", "@c:two.example", "m.x", "m2", "M_FORBIDDEN"},
			{"sender not a user", "one.example", "one.example", "m.x", "m2", "M_INVALID_PARAM"},
			{"no type", "one.example", "@c:one.example", "", "m2", "M_INVALID_PARAM"},
			{"no message ID", "one.example", "@c:one.example", "m.x", "", "M_INVALID_PARAM"},
			{"long message ID", "one.example", "@c:one.example", "m.x", strings.Repeat("m", MaxMessageIDBytes+1), "M_INVALID_PARAM"},
			{"NUL in message ID", "one.example", "@c:one.example", "m.x", "m\x00", "M_INVALID_PARAM"},
		} {
			if err := s.ReceiveToDevice(ctx, tc.origin, tc.sender, tc.typ, tc.id, ok); errcode(err) != tc.code {
				t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
			}
		}
		mixed := map[string]map[string]json.RawMessage{"@b:x": {"B1": raw(`"text"`), "B2": raw(`{"ok":true}`)}, "@a:x": {"A1": raw(`{"big":"` + strings.Repeat("a", MaxToDeviceContentBytes) + `"}`)}}
		if err := s.ReceiveToDevice(ctx, "one.example", "@c:one.example", "m.x", "m3", mixed); err != nil {
			t.Fatal(err)
		}
		if got := inbox(t, s, "@b:x", "B2"); len(got) != 2 || got[1] != `@c:one.example m.x {"ok":true}` {
			t.Fatalf("B2 has %v", got)
		}
		if got := inbox(t, s, "@b:x", "B1"); len(got) != 2 {
			t.Fatalf("B1 has %v", got)
		}
		if got := inbox(t, s, "@a:x", "A1"); len(got) != 1 {
			t.Fatalf("A1 has %v", got)
		}

		// An EDU for nobody here is not recorded.
		var before int
		count := func() int {
			var n int
			if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM to_device_inbound`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		before = count()
		if err := s.ReceiveToDevice(ctx, "one.example", "@c:one.example", "m.x", "m4", map[string]map[string]json.RawMessage{"@a:x": {"GONE": raw(`{}`)}}); err != nil {
			t.Fatal(err)
		}
		if count() != before {
			t.Fatal("an EDU for no device was recorded")
		}

		// After the retention the IDs are forgotten (the next delivery
		// deletes them): the old ID delivers again.
		c.advance(InboundToDeviceRetention + time.Hour)
		if err := s.ReceiveToDevice(ctx, "two.example", "@e:two.example", "m.x", "m9", ok); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != 1 {
			t.Fatalf("%d message IDs kept, want only the newest", n)
		}
		if err := s.ReceiveToDevice(ctx, "one.example", "@c:one.example", "m.room_key", "m1", ok); err != nil {
			t.Fatal(err)
		}
		if got := inbox(t, s, "@b:x", "B1"); len(got) != 4 {
			t.Fatalf("B1 has %v", got)
		}
	})
}

// claimer is another server's key claim endpoint, per server.
type claimer struct {
	mu    sync.Mutex
	asked map[string]map[string]map[string]string
}

func (c *claimer) ClaimKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	c.mu.Lock()
	c.asked[server] = want
	c.mu.Unlock()
	switch server {
	case "one.example":
		return map[string]map[string]map[string]json.RawMessage{
			"@c:one.example": {"D1": {"signed_curve25519:K1": raw(`{"key":"k1"}`)}, "D9": {"signed_curve25519:K9": raw(`{"key":"k9"}`)}},
			// Not asked for, or not of the server: left out.
			"@other:one.example": {"D1": {"signed_curve25519:K2": raw(`{"key":"k2"}`)}},
			"@b:x":               {"B1": {"signed_curve25519:K3": raw(`{"key":"forged"}`)}},
		}, nil
	case "slow.example":
		<-ctx.Done()
		return nil, merr.Custom(http.StatusBadGateway, "M_UNKNOWN", "Could not reach slow.example: %v", ctx.Err())
	default:
		return nil, merr.Custom(http.StatusBadGateway, "M_UNKNOWN", "Could not reach %s: connection refused", server)
	}
}

// TestClaimKeysAcrossServers: a claim hands out our users' keys and asks
// the other servers at once, each within the timeout; failures name the
// servers that did not answer, and only what was asked of a server is
// kept from its answer.
func TestClaimKeysAcrossServers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		cl := &claimer{asked: map[string]map[string]map[string]string{}}
		s, _ := newRemoteService(t, db, Options{Claimer: cl})
		addDevice(t, db, "@b:x", "B1", "")
		if _, err := s.Upload(ctx, "@b:x", "B1", UploadRequest{OneTimeKeys: otks("b", 2)}); err != nil {
			t.Fatal(err)
		}
		const alg = "signed_curve25519"
		want := map[string]map[string]string{
			"@b:x":            {"B1": alg},
			"@c:one.example":  {"D1": alg},
			"@s:slow.example": {"S1": alg},
			"@d:down.example": {"X": alg},
		}
		start := time.Now()
		resp, err := s.ClaimKeys(ctx, want, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 300*time.Millisecond {
			t.Fatalf("answered in %s, before the slow server's timeout", took)
		}
		if len(resp.OneTimeKeys["@b:x"]["B1"]) != 1 || string(resp.OneTimeKeys["@c:one.example"]["D1"]["signed_curve25519:K1"]) != `{"key":"k1"}` {
			t.Fatalf("keys %v", resp.OneTimeKeys)
		}
		if resp.OneTimeKeys["@c:one.example"]["D9"] != nil || resp.OneTimeKeys["@other:one.example"] != nil || resp.OneTimeKeys["@b:x"]["B1"]["signed_curve25519:K3"] != nil {
			t.Fatalf("kept what was not asked: %v", resp.OneTimeKeys)
		}
		failure := func(server string) (status int, msg string) {
			var f struct {
				Status  int    `json:"status"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(resp.Failures[server], &f); err != nil {
				t.Fatalf("failure of %s: %s", server, resp.Failures[server])
			}
			return f.Status, f.Message
		}
		if st, _ := failure("slow.example"); st != http.StatusGatewayTimeout {
			t.Fatalf("slow server: %s", resp.Failures["slow.example"])
		}
		if st, msg := failure("down.example"); st != http.StatusBadGateway || !strings.Contains(msg, "connection refused") {
			t.Fatalf("server down: %s", resp.Failures["down.example"])
		}
		if len(resp.Failures) != 2 {
			t.Fatalf("failures %v", resp.Failures)
		}
		cl.mu.Lock()
		if a := cl.asked["one.example"]; len(a) != 1 || a["@c:one.example"]["D1"] != alg {
			t.Fatalf("one.example was asked %v", a)
		}
		if _, ok := cl.asked["x"]; ok {
			t.Fatal("ourselves asked")
		}
		cl.mu.Unlock()

		// Many servers at once: each answered, by a few askers.
		many := map[string]map[string]string{}
		for i := 0; i < 100; i++ {
			many[fmt.Sprintf("@u:s%d.example", i)] = map[string]string{"D": alg}
		}
		resp, err = s.ClaimKeys(ctx, many, time.Second)
		if err != nil || len(resp.Failures) != 100 {
			t.Fatalf("claim of 100 servers: %d failures, %v", len(resp.Failures), err)
		}

		// Bad algorithms and user IDs are refused before anyone is asked.
		for _, bad := range []map[string]map[string]string{
			{"@c:one.example": {"D1": "a:b"}},
			{"@c:one.example": {"D1": ""}},
			{"not a user": {"D1": alg}},
		} {
			if _, err := s.ClaimKeys(ctx, bad, time.Second); errcode(err) != "M_INVALID_PARAM" {
				t.Fatalf("claim %v: %v", bad, err)
			}
		}

		// Another server's claim: our users only.
		got, err := s.ClaimForServer(ctx, map[string]map[string]string{"@b:x": {"B1": alg}, "@c:one.example": {"D1": alg}})
		if err != nil || len(got) != 1 || len(got["@b:x"]["B1"]) != 1 {
			t.Fatalf("claim for a server: %v %v", got, err)
		}
		if _, err := s.ClaimForServer(ctx, map[string]map[string]string{"nobody": {"B1": alg}}); errcode(err) != "M_INVALID_PARAM" {
			t.Fatalf("claim for a server of a bad user ID: %v", err)
		}
		// Both keys are gone: no key (and no fallback) left.
		if got, err := s.ClaimForServer(ctx, map[string]map[string]string{"@b:x": {"B1": alg}}); err != nil || len(got) != 0 {
			t.Fatalf("third claim: %v %v", got, err)
		}

		// Without federation the other servers are failures.
		s2, _ := newRemoteService(t, db, Options{})
		resp, err = s2.ClaimKeys(ctx, map[string]map[string]string{"@c:one.example": {"D1": alg}}, time.Second)
		if err != nil || resp.Failures["one.example"] == nil {
			t.Fatalf("claim without federation: %+v %v", resp, err)
		}
	})
}

func TestClaimTimeout(t *testing.T) {
	ms := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		in   *int64
		want time.Duration
	}{
		{nil, DefaultClaimTimeout},
		{ms(2500), 2500 * time.Millisecond},
		{ms(0), MinClaimTimeout},
		{ms(-5), MinClaimTimeout},
		{ms(1), MinClaimTimeout},
		{ms(1 << 60), MaxClaimTimeout},
	} {
		if got := ClaimTimeout(tc.in); got != tc.want {
			t.Errorf("ClaimTimeout(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestReceiveToDeviceManyUsers: an EDU naming more users than one query
// takes (most of them unknown) delivers to those that exist.
func TestReceiveToDeviceManyUsers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, _ := newRemoteService(t, db, Options{})
		addDevice(t, db, "@b:x", "B1", "")
		msgs := map[string]map[string]json.RawMessage{"@b:x": {"*": raw(`{}`)}}
		for i := 0; i < 2500; i++ {
			msgs[fmt.Sprintf("@u%d:x", i)] = map[string]json.RawMessage{"*": raw(`{}`)}
		}
		if err := s.ReceiveToDevice(ctx, "one.example", "@c:one.example", "m.x", "many", msgs); err != nil {
			t.Fatal(err)
		}
		if got := inbox(t, s, "@b:x", "B1"); len(got) != 1 {
			t.Fatalf("B1 has %v", got)
		}
	})
}
