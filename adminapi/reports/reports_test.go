package reports

import (
	"context"
	"strings"
	"testing"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func ptr(v int64) *int64 { return &v }

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason string
		score  *int64
		ok     bool
	}{
		{"empty", "", nil, true},
		{"reason and score", "spam", ptr(-100), true},
		{"zero score", "", ptr(0), true},
		{"positive score", "", ptr(1), false},
		{"too low", "", ptr(-101), false},
		{"long reason", strings.Repeat("x", MaxReasonLength+1), nil, false},
		{"bad utf-8", "\xff", nil, false},
		{"NUL", "a\x00b", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.reason, tc.score)
			if tc.ok != (err == nil) {
				t.Fatalf("Check = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !merr.Is(err, "M_INVALID_PARAM") {
				t.Fatalf("want M_INVALID_PARAM, got %v", err)
			}
		})
	}
}

func TestAddAndList(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db)
		id1, err := s.Add(ctx, "@a:test", "!r:test", "$e1", "spam", ptr(-50))
		if err != nil {
			t.Fatal(err)
		}
		id2, err := s.Add(ctx, "@b:test", "!q:test", "", "bad room", nil)
		if err != nil || id2 <= id1 {
			t.Fatalf("second report %d after %d: %v", id2, id1, err)
		}
		if _, err := s.Add(ctx, "@b:test", "!q:test", "$e", "", ptr(5)); !merr.Is(err, "M_INVALID_PARAM") {
			t.Fatalf("bad score: %v", err)
		}
		all, total, err := s.List(ctx, "", 0, 10)
		if err != nil || total != 2 || len(all) != 2 || all[0].ID != id2 || all[1].EventID != "$e1" || *all[1].Score != -50 || all[0].Score != nil {
			t.Fatalf("list: %+v %d %v", all, total, err)
		}
		room, total, err := s.List(ctx, "!r:test", 0, 10)
		if err != nil || total != 1 || len(room) != 1 || room[0].Reporter != "@a:test" || room[0].Reason != "spam" {
			t.Fatalf("room list: %+v %d %v", room, total, err)
		}
		older, total, err := s.List(ctx, "", 1, 10)
		if err != nil || total != 2 || len(older) != 1 || older[0].ID != id1 {
			t.Fatalf("paged list: %+v %v", older, err)
		}
	})
}
