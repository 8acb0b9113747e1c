package stats

import (
	"context"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestStats(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.Exec(ctx, q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		for _, u := range []string{"@alice:test", "@bob:test", "@c_d:test"} {
			exec(`INSERT INTO accounts (user_id, password_hash, created_ts) VALUES ($1, '', 0)`, u)
		}
		exec(`UPDATE accounts SET deactivated = TRUE WHERE user_id = '@bob:test'`)
		exec(`INSERT INTO profiles (user_id, displayname) VALUES ('@alice:test', 'Alice Liddell')`)
		exec(`INSERT INTO devices (user_id, device_id, token_hash, created_ts, last_seen_ts) VALUES ('@alice:test', 'A', 'h1', 0, $1)`, now.Add(-time.Hour).UnixMilli())
		exec(`INSERT INTO devices (user_id, device_id, token_hash, created_ts, last_seen_ts) VALUES ('@bob:test', 'B', 'h2', 0, $1)`, now.Add(-10*24*time.Hour).UnixMilli())
		media := []struct {
			id, user string
			size     int64
			ts       int64
		}{{"m1", "@alice:test", 100, 1000}, {"m2", "@alice:test", 50, 2000}, {"m3", "@bob:test", 500, 3000}, {"m4", "@c_d:test", 1, 4000}}
		for _, m := range media {
			exec(`INSERT INTO media (media_id, user_id, size, sha256, created_ts) VALUES ($1, $2, $3, 'h', $4)`, m.id, m.user, m.size, m.ts)
		}
		exec(`INSERT INTO media (media_id, user_id, created_ts, expires_ts) VALUES ('pending', '@alice:test', 0, 99)`)
		exec(`INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ('!r:test', '10', '@alice:test', 0)`)
		for i, ts := range []int64{now.Add(-time.Hour).UnixMilli(), now.Add(-25 * time.Hour).UnixMilli(), now.Add(-26 * time.Hour).UnixMilli()} {
			exec(`INSERT INTO events (pos, event_id, room_id, type, sender, depth, origin_ts, snapshot_id, json) VALUES ($1, $2, '!r:test', 'm.room.message', '@alice:test', 1, $3, 0, '{"content":{}}')`, i+1, "$e"+string(rune('a'+i)), ts)
		}
		s := New(db, "test")
		s.now = func() time.Time { return now }

		list, total, err := s.UsersMedia(ctx, UserMediaQuery{Limit: 10, Backwards: true})
		if err != nil || total != 3 || len(list) != 3 || list[0].UserID != "@bob:test" || list[1].MediaCount != 2 || list[1].MediaLength != 150 ||
			list[1].DisplayName == nil || *list[1].DisplayName != "Alice Liddell" {
			t.Fatalf("by size: %+v %d %v", list, total, err)
		}
		list, total, _ = s.UsersMedia(ctx, UserMediaQuery{Limit: 10, Search: "liddell"})
		if total != 1 || list[0].UserID != "@alice:test" {
			t.Fatalf("search by name: %+v", list)
		}
		// The underscore is a character, not a wildcard.
		list, total, _ = s.UsersMedia(ctx, UserMediaQuery{Limit: 10, Search: "c_d"})
		if total != 1 || list[0].UserID != "@c_d:test" {
			t.Fatalf("search with _: %+v", list)
		}
		list, total, err = s.UsersMedia(ctx, UserMediaQuery{Limit: 1, From: 1, OrderBy: "user_id", FromTS: 1500})
		if err != nil || total != 3 || len(list) != 1 || list[0].UserID != "@bob:test" || list[0].MediaCount != 1 {
			t.Fatalf("page by user_id from_ts: %+v %d %v", list, total, err)
		}
		if _, _, err := s.UsersMedia(ctx, UserMediaQuery{Limit: 1, OrderBy: "x; DROP TABLE media"}); err == nil {
			t.Fatal("an unknown order_by was taken")
		}

		rooms, err := s.LargestRooms(ctx)
		if err != nil || len(rooms) != 1 || rooms[0].RoomID != "!r:test" || rooms[0].EstimatedSize != 3*int64(len(`{"content":{}}`)) {
			t.Fatalf("largest rooms: %+v %v", rooms, err)
		}

		st, err := s.ServerStats(ctx, 3)
		if err != nil {
			t.Fatal(err)
		}
		if st.TotalUsers != 3 || st.DeactivatedUsers != 1 || st.TotalRooms != 1 || st.DailyMessages != 1 ||
			st.DailyActiveUsers != 1 || st.MonthlyActiveUsers != 2 || st.MediaCount != 4 || st.MediaBytes != 651 || st.DatabaseSizeBytes <= 0 {
			t.Fatalf("server statistics: %+v", st)
		}
		want := []DayCount{{"2026-03-08", 0}, {"2026-03-09", 2}, {"2026-03-10", 1}}
		if len(st.MessagesPerDay) != 3 {
			t.Fatalf("messages per day: %+v", st.MessagesPerDay)
		}
		for i := range want {
			if st.MessagesPerDay[i] != want[i] {
				t.Fatalf("messages per day: %+v, want %+v", st.MessagesPerDay, want)
			}
		}
	})
}
