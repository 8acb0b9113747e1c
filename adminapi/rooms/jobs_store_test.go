package rooms

import (
	"context"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// Statuses survive a restart: a finished job answers from the database; a
// job its server stopped is failed with a clear error; one whose server
// vanished (no heartbeat) is failed when read, and the room may be deleted
// again.
func TestJobStatusesSurviveRestart(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := &fakeRooms{release: make(chan struct{})}
		close(f.release)
		a := New(db, f, f)
		del, err := a.StartShutdown(ctx, "!r:test", roomserver.ShutdownRequest{Purge: true})
		if err != nil {
			t.Fatal(err)
		}
		pur, err := a.StartPurge(ctx, "!r:test", roomserver.PurgePoint{BeforeTS: 5})
		if err != nil {
			t.Fatal(err)
		}
		waitStatus(t, func() string { st, _ := a.DeleteStatus(ctx, del); return st.Status }, StatusComplete)
		waitStatus(t, func() string { st, _ := a.PurgeStatus(ctx, pur); return st.Status }, StatusComplete)
		a.Close()

		// A job stopped by Close: failed, saying so.
		blocked := &fakeRooms{release: make(chan struct{})}
		b := New(db, blocked, nil)
		stopped, err := b.StartShutdown(ctx, "!s:test", roomserver.ShutdownRequest{})
		if err != nil {
			t.Fatal(err)
		}
		b.Close()

		// The next process.
		c := New(db, f, f)
		defer c.Close()
		st, err := c.DeleteStatus(ctx, del)
		if err != nil || st.Status != StatusComplete || st.RoomID != "!r:test" || len(st.ShutdownRoom.KickedUsers) != 1 || st.ShutdownRoom.LocalAliases == nil {
			t.Fatalf("deletion after restart: %+v %v", st, err)
		}
		list, err := c.RoomDeleteStatuses(ctx, "!r:test")
		if err != nil || len(list) != 1 || list[0].DeleteID != del {
			t.Fatalf("room deletions after restart: %+v %v", list, err)
		}
		if ps, err := c.PurgeStatus(ctx, pur); err != nil || ps.Status != StatusComplete {
			t.Fatalf("purge after restart: %+v %v", ps, err)
		}
		if st, err := c.DeleteStatus(ctx, stopped); err != nil || st.Status != StatusFailed || st.Error != errInterrupted.Msg {
			t.Fatalf("stopped job: %+v %v", st, err)
		}
		if _, err := c.DeleteStatus(ctx, "nope"); !merr.Is(err, "M_NOT_FOUND") {
			t.Fatalf("unknown: %v", err)
		}
		if _, err := c.PurgeStatus(ctx, del); !merr.Is(err, "M_NOT_FOUND") {
			t.Fatalf("a delete_id is no purge_id: %v", err)
		}

		// A process that vanished mid-job (its row says running): while its
		// heartbeat is recent the job counts as running elsewhere ...
		if err := c.insertJob(ctx, jobRow{id: "lost", kind: kindDelete, roomID: "!lost:test", status: StatusPurging, created: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.StartShutdown(ctx, "!lost:test", roomserver.ShutdownRequest{}); !merr.Is(err, "M_UNKNOWN") {
			t.Fatalf("deleting a room another process deletes: %v", err)
		}
		if st, _ := c.DeleteStatus(ctx, "lost"); st.Status != StatusPurging {
			t.Fatalf("running elsewhere: %+v", st)
		}
		// ... and once it is silent, the job is failed and the room free.
		c.now = func() time.Time { return time.Now().Add(staleAfter + time.Minute) }
		if st, _ := c.DeleteStatus(ctx, "lost"); st.Status != StatusFailed || st.Error != errInterrupted.Msg {
			t.Fatalf("lost job: %+v", st)
		}
		c.now = time.Now
		if st, _ := c.DeleteStatus(ctx, "lost"); st.Status != StatusFailed {
			t.Fatalf("the failure is stored: %+v", st)
		}
		if _, err := c.StartShutdown(ctx, "!lost:test", roomserver.ShutdownRequest{}); err != nil {
			t.Fatalf("deleting again: %v", err)
		}
	})
}
