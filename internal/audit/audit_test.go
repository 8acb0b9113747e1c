package audit

import (
	"context"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestRecordQueryPrune(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		l := New(db)
		clock := time.UnixMilli(1_000_000)
		l.now = func() time.Time { return clock }
		add := func(e Entry) { l.Record(ctx, e); clock = clock.Add(time.Minute) }
		add(Entry{Action: LoginFailed, Target: "@alice:hs", Addr: "10.0.0.9", Detail: map[string]any{"reason": "bad password"}})
		add(Entry{Action: Login, Actor: "@alice:hs", Addr: "10.0.0.1", OK: true})
		add(Entry{Action: "admin.user.deactivate", Actor: "@root:hs", Target: "@bob:hs", OK: true})
		add(Entry{Action: "admin.room.delete", Actor: "@root:hs", Target: "!r:hs", OK: true})

		for _, tc := range []struct {
			name string
			f    Filter
			want []string
		}{
			{"all, newest first", Filter{}, []string{"admin.room.delete", "admin.user.deactivate", Login, LoginFailed}},
			{"user as actor or target", Filter{User: "@alice:hs"}, []string{Login, LoginFailed}},
			{"admin prefix", Filter{Action: "admin."}, []string{"admin.room.delete", "admin.user.deactivate"}},
			{"exact action", Filter{Action: Login}, []string{Login}},
			{"since", Filter{Since: time.UnixMilli(1_000_000).Add(2 * time.Minute)}, []string{"admin.room.delete", "admin.user.deactivate"}},
			{"until", Filter{Until: time.UnixMilli(1_000_000).Add(time.Minute)}, []string{LoginFailed}},
			{"limit", Filter{Limit: 1}, []string{"admin.room.delete"}},
		} {
			got, err := l.Query(ctx, tc.f)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			var actions []string
			for _, r := range got {
				actions = append(actions, r.Action)
			}
			if len(actions) != len(tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, actions, tc.want)
				continue
			}
			for i := range actions {
				if actions[i] != tc.want[i] {
					t.Errorf("%s: got %v, want %v", tc.name, actions, tc.want)
					break
				}
			}
		}
		got, _ := l.Query(ctx, Filter{Action: LoginFailed})
		if len(got) != 1 || got[0].Addr != "10.0.0.9" || got[0].OK || got[0].Detail["reason"] != "bad password" {
			t.Errorf("failed login read back as %+v", got)
		}
		page, _ := l.Query(ctx, Filter{Before: got[0].ID + 2})
		if len(page) != 2 {
			t.Errorf("entries before id %d: %d, want 2", got[0].ID+2, len(page))
		}
		n, err := l.Prune(ctx, time.UnixMilli(1_000_000).Add(2*time.Minute))
		if err != nil || n != 2 {
			t.Errorf("prune: %d, %v; want 2", n, err)
		}
		var nilLog *Log
		nilLog.Record(ctx, Entry{Action: Login}) // records nothing, no panic
	})
}
