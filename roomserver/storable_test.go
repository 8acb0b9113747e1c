package roomserver

import (
	"context"
	"testing"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// TestUnstorableIDsNameNothing: event, room and user IDs with a NUL byte or
// invalid UTF-8 are simply not found, on both databases (PostgreSQL used to
// fail the query, which became a 500).
func TestUnstorableIDsNameNothing(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		bad := []string{"$a\x00b", "\xff\xfe", "$\xed\xa0\x80"}
		evs, err := EventsByID(ctx, db, bad)
		if err != nil || len(evs) != 0 {
			t.Fatalf("EventsByID(bad) = %v, %v", evs, err)
		}
		var good string
		if err := db.QueryRow(ctx, `SELECT event_id FROM events WHERE room_id = $1 LIMIT 1`, res.RoomID).Scan(&good); err != nil {
			t.Fatal(err)
		}
		evs, err = EventsByID(ctx, db, append(bad, good))
		if err != nil || len(evs) != 1 || evs[0].EventID != good {
			t.Fatalf("EventsByID(bad + good) = %d events, %v", len(evs), err)
		}
		for _, room := range []string{"!a\x00b:test", "!\xff:test"} {
			if _, _, err := h.s.Membership(ctx, room, "@alice:test"); !merr.Is(err, "M_NOT_FOUND") {
				t.Errorf("Membership(%q) = %v, want M_NOT_FOUND", room, err)
			}
		}
		if m, _, err := h.s.Membership(ctx, res.RoomID, "@a\x00:test"); err != nil || m != "" {
			t.Errorf("Membership of a NUL user = %q, %v", m, err)
		}
	})
}
