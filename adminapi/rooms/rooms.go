package rooms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
)

// roomOps is what the roomserver does for the admin API.
type roomOps interface {
	ValidateShutdown(ctx context.Context, roomID string, req roomserver.ShutdownRequest) (bool, error)
	ShutdownRoom(ctx context.Context, roomID string, req roomserver.ShutdownRequest, progress func(phase string)) (roomserver.ShutdownResult, error)
	ValidatePurge(ctx context.Context, roomID string, p roomserver.PurgePoint) error
	PurgeHistory(ctx context.Context, roomID string, p roomserver.PurgePoint) ([]roomserver.PurgedEvent, error)
}

// cacheForgetter drops cached copies of removed events (the sync engine).
type cacheForgetter interface {
	ForgetEvents(roomID string, eventIDs, parents []string)
}

// RoomDataPurger is a package that keeps rows about rooms outside the
// roomserver (receipts, peeks, room account data and tags, notification
// counts, key backups, reports …): when a room is purged, each drops its
// rows of the room and its cached copies. Implemented by the owner of the
// rows, so this package never touches another package's tables.
type RoomDataPurger interface {
	PurgeRoomData(ctx context.Context, roomID string) error
}

// Job states, with the names admin tools know.
const (
	StatusShuttingDown = "shutting_down"
	StatusPurging      = "purging"
	StatusComplete     = "complete"
	StatusFailed       = "failed"
	// StatusActive is a history purge still running.
	StatusActive = "active"
)

// DeleteStatus is a room deletion's progress (Synapse's shape).
type DeleteStatus struct {
	DeleteID     string                    `json:"delete_id"`
	RoomID       string                    `json:"-"`
	Status       string                    `json:"status"`
	Error        string                    `json:"error,omitempty"`
	ShutdownRoom roomserver.ShutdownResult `json:"shutdown_room"`
	started      time.Time
}

// PurgeStatus is a history purge's progress.
type PurgeStatus struct {
	Status  string `json:"status"`
	Error   string `json:"error,omitempty"`
	started time.Time
	done    bool
}

// maxKept bounds the finished jobs kept; keepFor is how long they are.
const (
	maxKept = 1000
	keepFor = 24 * time.Hour
)

// Service runs and tracks the jobs.
type Service struct {
	db      *storage.DB // nil: statuses in memory only
	now     func() time.Time
	rooms   roomOps
	caches  cacheForgetter
	purgers []RoomDataPurger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	deletes map[string]*DeleteStatus
	purges  map[string]*PurgeStatus
}

// New returns the service. db keeps the jobs' statuses across restarts
// (nil: in memory only); caches may be nil (no sync engine); purgers are
// told of every purged room.
func New(db *storage.DB, rooms roomOps, caches cacheForgetter, purgers ...RoomDataPurger) *Service {
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{db: db, now: time.Now, rooms: rooms, caches: caches, purgers: purgers, ctx: ctx, cancel: cancel,
		deletes: map[string]*DeleteStatus{}, purges: map[string]*PurgeStatus{}}
}

// Close cancels running jobs and waits for them.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// jobContext is the context of a background job: the request's values
// (its logger) without its end, cancelled by Close.
func (s *Service) jobContext(ctx context.Context) (context.Context, context.CancelFunc) {
	jctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(s.ctx, cancel)
	return jctx, func() { stop(); cancel() }
}

// Shutdown shuts the room down now and answers what it did.
func (s *Service) Shutdown(ctx context.Context, roomID string, req roomserver.ShutdownRequest) (roomserver.ShutdownResult, error) {
	return s.shutdown(ctx, roomID, req, nil)
}

// shutdown shuts the room down, telling progress of each phase, and with a
// purge drops the cached copies of its events.
func (s *Service) shutdown(ctx context.Context, roomID string, req roomserver.ShutdownRequest, progress func(phase string)) (roomserver.ShutdownResult, error) {
	res, err := s.rooms.ShutdownRoom(ctx, roomID, req, progress)
	if err != nil || !req.Purge {
		return res, err
	}
	if s.caches != nil {
		s.caches.ForgetEvents(roomID, nil, nil)
	}
	return res, s.purgeRoomData(ctx, roomID)
}

// purgeRoomData has every other owner of room rows drop the room's; all
// are asked even when one fails, and the failures are returned together.
func (s *Service) purgeRoomData(ctx context.Context, roomID string) error {
	var errs []error
	for _, p := range s.purgers {
		if err := p.PurgeRoomData(ctx, roomID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// background runs work as a job (jobContext; Close cancels and waits for
// it), logs its failure as "<what> failed", and then calls finish with its
// error under s.mu, to record the outcome in the job's status.
func (s *Service) background(ctx context.Context, jobID, roomID, what string, work func(ctx context.Context) error, finish func(err error) jobRow) {
	jctx, done := s.jobContext(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer done()
		stopBeat := s.heartbeat(jctx, jobID)
		err := work(jctx)
		stopBeat()
		if err != nil {
			logging.From(jctx).WithError(err).WithField("room_id", roomID).Error(what + " failed")
		}
		if err != nil && s.ctx.Err() != nil {
			// Close came first: the server is stopping.
			err = errInterrupted
		}
		s.mu.Lock()
		row := finish(err)
		s.mu.Unlock()
		s.saveJob(context.WithoutCancel(jctx), row)
	}()
}

// StartShutdown checks the request, then shuts the room down in the
// background and returns the deletion's ID.
func (s *Service) StartShutdown(ctx context.Context, roomID string, req roomserver.ShutdownRequest) (string, error) {
	if _, err := s.rooms.ValidateShutdown(ctx, roomID, req); err != nil {
		return "", err
	}
	s.mu.Lock()
	for _, d := range s.deletes {
		if d.RoomID == roomID && (d.Status == StatusShuttingDown || d.Status == StatusPurging) {
			s.mu.Unlock()
			return "", merr.Custom(400, "M_UNKNOWN", "The room is being deleted already (delete_id %s)", d.DeleteID)
		}
	}
	s.mu.Unlock()
	// Another process's deletion of the room, or one of before a restart.
	if running, err := s.runningDeletion(ctx, roomID); err != nil {
		return "", err
	} else if running != "" {
		return "", merr.Custom(400, "M_UNKNOWN", "The room is being deleted already (delete_id %s)", running)
	}
	s.mu.Lock()
	id := newID()
	st := &DeleteStatus{DeleteID: id, RoomID: roomID, Status: StatusShuttingDown, started: s.now(),
		ShutdownRoom: roomserver.ShutdownResult{KickedUsers: []string{}, FailedToKickUsers: []string{}, LocalAliases: []string{}}}
	s.deletes[id] = st
	s.pruneLocked()
	row := st.row()
	s.mu.Unlock()
	if err := s.insertJob(ctx, row); err != nil {
		s.mu.Lock()
		delete(s.deletes, id)
		s.mu.Unlock()
		return "", err
	}
	var res roomserver.ShutdownResult
	s.background(ctx, id, roomID, "room deletion", func(jctx context.Context) error {
		var err error
		res, err = s.shutdown(jctx, roomID, req, func(phase string) {
			s.mu.Lock()
			st.Status = phase
			row := st.row()
			s.mu.Unlock()
			s.saveJob(jctx, row)
		})
		return err
	}, func(err error) jobRow {
		st.ShutdownRoom = res
		st.Status, st.Error = outcome(err)
		return st.row()
	})
	return id, nil
}

// outcome is a finished job's status and error text.
func outcome(err error) (status, errText string) {
	if err != nil {
		return StatusFailed, errorText(err)
	}
	return StatusComplete, ""
}

// errorText is what an admin is told of a failed job.
func errorText(err error) string {
	if e, ok := merr.As(err); ok {
		return e.Msg
	}
	return "Internal error: see the server's log"
}

// DeleteStatus returns a deletion's status (M_NOT_FOUND when unknown):
// this process's from memory, others (another process's, or of before a
// restart) from the database.
func (s *Service) DeleteStatus(ctx context.Context, id string) (DeleteStatus, error) {
	s.mu.Lock()
	st, ok := s.deletes[id]
	if ok {
		defer s.mu.Unlock()
		return *st, nil
	}
	s.mu.Unlock()
	rows, err := s.loadJobs(ctx, `job_id = $1 AND kind = 'delete'`, id)
	if err != nil {
		return DeleteStatus{}, err
	}
	if len(rows) == 0 {
		return DeleteStatus{}, merr.NotFound("delete_id %s not found", id)
	}
	return rows[0].deleteStatus(), nil
}

// RoomDeleteStatuses returns the deletions of a room, oldest first
// (M_NOT_FOUND when there are none).
func (s *Service) RoomDeleteStatuses(ctx context.Context, roomID string) ([]DeleteStatus, error) {
	rows, err := s.loadJobs(ctx, `room_id = $1 AND kind = 'delete'`, roomID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []DeleteStatus
	for _, st := range s.deletes {
		if st.RoomID == roomID {
			out = append(out, *st)
		}
	}
	for _, r := range rows {
		if _, mine := s.deletes[r.id]; !mine {
			out = append(out, r.deleteStatus())
		}
	}
	if len(out) == 0 {
		return nil, merr.NotFound("No deletion found for room %s", roomID)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].started.Before(out[j].started) })
	return out, nil
}

// StartPurge checks the purge, then runs it in the background and returns
// its ID.
func (s *Service) StartPurge(ctx context.Context, roomID string, p roomserver.PurgePoint) (string, error) {
	if err := s.rooms.ValidatePurge(ctx, roomID, p); err != nil {
		return "", err
	}
	id := newID()
	st := &PurgeStatus{Status: StatusActive, started: s.now()}
	if err := s.insertJob(ctx, jobRow{id: id, kind: kindPurge, roomID: roomID, status: st.Status, created: st.started}); err != nil {
		return "", err
	}
	s.mu.Lock()
	s.purges[id] = st
	s.pruneLocked()
	s.mu.Unlock()
	s.background(ctx, id, roomID, "history purge", func(jctx context.Context) error {
		return s.Purge(jctx, roomID, p)
	}, func(err error) jobRow {
		st.done = true
		st.Status, st.Error = outcome(err)
		return jobRow{id: id, kind: kindPurge, roomID: roomID, status: st.Status, errText: st.Error, created: st.started}
	})
	return id, nil
}

// Purge purges the room's history now and drops the cached copies.
func (s *Service) Purge(ctx context.Context, roomID string, p roomserver.PurgePoint) error {
	purged, err := s.rooms.PurgeHistory(ctx, roomID, p)
	if s.caches != nil && len(purged) > 0 {
		ids, parents := make([]string, 0, len(purged)), []string{}
		for _, e := range purged {
			ids = append(ids, e.EventID)
			if e.RelatesTo != "" {
				parents = append(parents, e.RelatesTo)
			}
		}
		s.caches.ForgetEvents(roomID, ids, parents)
	}
	return err
}

// PurgeStatus returns a purge's status (M_NOT_FOUND when unknown), as
// DeleteStatus does.
func (s *Service) PurgeStatus(ctx context.Context, id string) (PurgeStatus, error) {
	s.mu.Lock()
	st, ok := s.purges[id]
	if ok {
		defer s.mu.Unlock()
		return *st, nil
	}
	s.mu.Unlock()
	rows, err := s.loadJobs(ctx, `job_id = $1 AND kind = 'purge'`, id)
	if err != nil {
		return PurgeStatus{}, err
	}
	if len(rows) == 0 {
		return PurgeStatus{}, merr.NotFound("purge_id %s not found", id)
	}
	r := rows[0]
	return PurgeStatus{Status: r.status, Error: r.errText, started: r.created, done: r.finished()}, nil
}

// pruneLocked forgets finished jobs older than a day, and the oldest
// finished ones beyond maxKept.
func (s *Service) pruneLocked() {
	cutoff := s.now().Add(-keepFor)
	for id, d := range s.deletes {
		if d.started.Before(cutoff) && (d.Status == StatusComplete || d.Status == StatusFailed) {
			delete(s.deletes, id)
		}
	}
	for id, p := range s.purges {
		if p.started.Before(cutoff) && p.done {
			delete(s.purges, id)
		}
	}
	for len(s.deletes) > maxKept {
		oldest := ""
		for id, d := range s.deletes {
			if (d.Status == StatusComplete || d.Status == StatusFailed) && (oldest == "" || d.started.Before(s.deletes[oldest].started)) {
				oldest = id
			}
		}
		if oldest == "" {
			break
		}
		delete(s.deletes, oldest)
	}
	for len(s.purges) > maxKept {
		oldest := ""
		for id, p := range s.purges {
			if p.done && (oldest == "" || p.started.Before(s.purges[oldest].started)) {
				oldest = id
			}
		}
		if oldest == "" {
			break
		}
		delete(s.purges, oldest)
	}
}
