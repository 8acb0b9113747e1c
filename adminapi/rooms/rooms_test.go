package rooms

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
)

type fakeRooms struct {
	release chan struct{} // shutdowns wait for it
	fail    error
	mu      sync.Mutex
	purged  []string
}

func (f *fakeRooms) ValidateShutdown(_ context.Context, roomID string, _ roomserver.ShutdownRequest) (bool, error) {
	if roomID == "!bad:test" {
		return false, merr.NotFound("Unknown room %s", roomID)
	}
	return true, nil
}

func (f *fakeRooms) ShutdownRoom(ctx context.Context, roomID string, req roomserver.ShutdownRequest, progress func(string)) (roomserver.ShutdownResult, error) {
	if progress != nil {
		progress(StatusShuttingDown)
	}
	select {
	case <-f.release:
	case <-ctx.Done():
		return roomserver.ShutdownResult{}, ctx.Err()
	}
	if f.fail != nil {
		return roomserver.ShutdownResult{}, f.fail
	}
	return roomserver.ShutdownResult{KickedUsers: []string{"@a:test"}}, nil
}

func (f *fakeRooms) ValidatePurge(_ context.Context, roomID string, p roomserver.PurgePoint) error {
	if p.BeforeTS <= 0 && p.EventID == "" {
		return merr.InvalidParam("no point")
	}
	return nil
}

func (f *fakeRooms) PurgeHistory(_ context.Context, roomID string, p roomserver.PurgePoint) ([]roomserver.PurgedEvent, error) {
	return []roomserver.PurgedEvent{{EventID: "$1", RelatesTo: "$0"}, {EventID: "$2"}}, f.fail
}

func (f *fakeRooms) ForgetEvents(roomID string, ids, parents []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.purged = append(f.purged, roomID)
	f.purged = append(f.purged, ids...)
	f.purged = append(f.purged, parents...)
}

func waitStatus(t *testing.T, get func() string, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if get() == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("status %q, want %q", get(), want)
}

func TestShutdownJobs(t *testing.T) {
	ctx := context.Background()
	f := &fakeRooms{release: make(chan struct{})}
	s := New(nil, f, f)
	defer s.Close()
	if _, err := s.StartShutdown(ctx, "!bad:test", roomserver.ShutdownRequest{}); !merr.Is(err, "M_NOT_FOUND") {
		t.Fatalf("unknown room: %v", err)
	}
	id, err := s.StartShutdown(ctx, "!r:test", roomserver.ShutdownRequest{Purge: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartShutdown(ctx, "!r:test", roomserver.ShutdownRequest{}); !merr.Is(err, "M_UNKNOWN") {
		t.Fatalf("second deletion of the same room: %v", err)
	}
	st, _ := s.DeleteStatus(ctx, id)
	if st.Status != StatusShuttingDown {
		t.Fatalf("status while running: %+v", st)
	}
	close(f.release)
	waitStatus(t, func() string { st, _ := s.DeleteStatus(ctx, id); return st.Status }, StatusComplete)
	list, err := s.RoomDeleteStatuses(ctx, "!r:test")
	if err != nil || len(list) != 1 || list[0].DeleteID != id || len(list[0].ShutdownRoom.KickedUsers) != 1 {
		t.Fatalf("room statuses: %+v %v", list, err)
	}
	if _, err := s.DeleteStatus(ctx, "nope"); !merr.Is(err, "M_NOT_FOUND") {
		t.Fatalf("unknown delete_id: %v", err)
	}
	if _, err := s.RoomDeleteStatuses(ctx, "!other:test"); !merr.Is(err, "M_NOT_FOUND") {
		t.Fatalf("room without deletions: %v", err)
	}

	f.fail = errors.New("disk on fire")
	id, _ = s.StartShutdown(ctx, "!r:test", roomserver.ShutdownRequest{})
	waitStatus(t, func() string { st, _ := s.DeleteStatus(ctx, id); return st.Status }, StatusFailed)
	if st, _ := s.DeleteStatus(ctx, id); st.Error != "Internal error: see the server's log" {
		t.Fatalf("an internal error's text must not leak: %q", st.Error)
	}
}

func TestPurgeJobs(t *testing.T) {
	ctx := context.Background()
	f := &fakeRooms{release: make(chan struct{})}
	s := New(nil, f, f)
	defer s.Close()
	if _, err := s.StartPurge(ctx, "!r:test", roomserver.PurgePoint{}); !merr.Is(err, "M_INVALID_PARAM") {
		t.Fatalf("no point: %v", err)
	}
	id, err := s.StartPurge(ctx, "!r:test", roomserver.PurgePoint{BeforeTS: 5})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, func() string { st, _ := s.PurgeStatus(ctx, id); return st.Status }, StatusComplete)
	f.mu.Lock()
	got := f.purged
	f.mu.Unlock()
	if len(got) != 4 || got[0] != "!r:test" || got[3] != "$0" {
		t.Fatalf("caches told %v", got)
	}
	if _, err := s.PurgeStatus(ctx, "nope"); !merr.Is(err, "M_NOT_FOUND") {
		t.Fatalf("unknown purge_id: %v", err)
	}
}

func TestCloseCancelsJobs(t *testing.T) {
	f := &fakeRooms{release: make(chan struct{})}
	s := New(nil, f, nil)
	id, err := s.StartShutdown(context.Background(), "!r:test", roomserver.ShutdownRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // returns: the job sees its context end
	if st, _ := s.DeleteStatus(context.Background(), id); st.Status != StatusFailed {
		t.Fatalf("status after Close: %+v", st)
	}
}
