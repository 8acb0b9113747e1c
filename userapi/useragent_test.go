package userapi

import (
	"context"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// The User-Agent of later requests reaches devices.user_agent with the
// last-seen batch: at once when it changes, with the interval otherwise.
func TestLastSeenUserAgent(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		clk := &clock{t: time.Unix(1_700_000_000, 0)}
		s := newTestService(t, db, nil, func(o *Options) { o.Now = clk.Now; o.SeenFlushInterval = time.Hour })
		mustRegister(t, s, "alice", "pw")
		ctx := WithUserAgent(context.Background(), "App/1.0")
		a, err := s.Login(ctx, LoginRequest{User: "alice", Password: "pw"})
		wantCode(t, err, "")
		agent := func(t *testing.T) string {
			t.Helper()
			if err := s.FlushSeen(ctx); err != nil {
				t.Fatal(err)
			}
			m, err := s.DeviceUserAgents(ctx, a.UserID)
			if err != nil {
				t.Fatal(err)
			}
			return m[a.DeviceID]
		}
		for _, step := range []struct {
			ua, want string
			after    time.Duration
		}{
			{"App/1.0", "App/1.0", 0},
			{"App/1.1", "App/1.1", time.Second}, // changed: written within the interval
			{"", "App/1.1", time.Second},        // none sent: kept
			{"App/1.1", "App/1.1", time.Hour},
			{"App/2.0", "App/2.0", time.Second},
		} {
			clk.Add(step.after)
			if _, err := s.Authenticate(WithUserAgent(ctx, step.ua), a.AccessToken); err != nil {
				t.Fatal(err)
			}
			if got := agent(t); got != step.want {
				t.Fatalf("after %q: user agent %q, want %q", step.ua, got, step.want)
			}
		}
	})
}
