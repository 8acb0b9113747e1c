package userapi

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

func TestMain(m *testing.M) {
	// Audit lines are checked where they matter; keep test output readable.
	l := logrus.New()
	l.SetOutput(io.Discard)
	logging.SetFallback(l)
	os.Exit(m.Run())
}

// fakeBus records publications and delivers them synchronously to subscribers.
type fakeBus struct {
	mu   sync.Mutex
	msgs []busMsg
	subs map[string][]func([]byte)
}

type busMsg struct {
	topic string
	data  []byte
}

func newFakeBus() *fakeBus { return &fakeBus{subs: map[string][]func([]byte){}} }

func (b *fakeBus) Publish(topic string, data []byte) error {
	b.mu.Lock()
	b.msgs = append(b.msgs, busMsg{topic, append([]byte(nil), data...)})
	subs := append([]func([]byte){}, b.subs[topic]...)
	b.mu.Unlock()
	for _, fn := range subs {
		fn(data)
	}
	return nil
}

func (b *fakeBus) Subscribe(topic string, fn func([]byte)) (func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[topic] = append(b.subs[topic], fn)
	return func() {}, nil
}

// notices returns the account data notices published so far.
func (b *fakeBus) notices(t *testing.T) []AccountDataNotice {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []AccountDataNotice
	for _, m := range b.msgs {
		if m.topic != AccountDataTopic {
			continue
		}
		var n AccountDataNotice
		if err := json.Unmarshal(m.data, &n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const testServer = "test.local"

func newTestService(t *testing.T, db *storage.DB, bus Bus, mod ...func(*Options)) *Service {
	t.Helper()
	opts := Options{ServerName: testServer, PasswordHashCost: 4, SharedSecret: "0123456789abcdef-secret"}
	for _, m := range mod {
		m(&opts)
	}
	if bus == nil {
		bus = newFakeBus()
	}
	s, err := New(context.Background(), db, bus, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func mustRegister(t *testing.T, s *Service, localpart, password string) Session {
	t.Helper()
	sess, err := s.Register(context.Background(), RegisterRequest{Localpart: localpart, Password: password, Via: "test"})
	if err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	return sess
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Fatalf("unexpected error %v", err)
		}
		return
	}
	if !merr.Is(err, code) {
		t.Fatalf("error %v, want %s", err, code)
	}
}
