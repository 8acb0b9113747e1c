package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
)

// Job kinds in admin_room_jobs.
const (
	kindDelete = "delete"
	kindPurge  = "purge"
)

// A running job touches its row every heartbeatEvery; a running job whose
// row was not touched for staleAfter belongs to a process that ended (a
// restart or a crash) and is reported as failed.
const (
	heartbeatEvery = 30 * time.Second
	staleAfter     = 2 * time.Minute
)

// errInterrupted is the outcome of a job its server stopped, or lost.
var errInterrupted = merr.Unknown("Interrupted: the server stopped while the job ran. Start it again; what was done stays done")

// jobRow is a job as admin_room_jobs keeps it.
type jobRow struct {
	id, kind, roomID, status, errText string
	result                            roomserver.ShutdownResult
	created, updated                  time.Time
}

func running(status string) bool {
	return status == StatusShuttingDown || status == StatusPurging || status == StatusActive
}

func (r jobRow) finished() bool { return !running(r.status) }

func (r jobRow) deleteStatus() DeleteStatus {
	res := r.result
	for _, l := range []*[]string{&res.KickedUsers, &res.FailedToKickUsers, &res.LocalAliases} {
		if *l == nil {
			*l = []string{}
		}
	}
	return DeleteStatus{DeleteID: r.id, RoomID: r.roomID, Status: r.status, Error: r.errText, ShutdownRoom: res, started: r.created}
}

// row is the deletion as stored (the caller holds s.mu).
func (d *DeleteStatus) row() jobRow {
	return jobRow{id: d.DeleteID, kind: kindDelete, roomID: d.RoomID, status: d.Status, errText: d.Error, result: d.ShutdownRoom, created: d.started}
}

// insertJob stores a new job, and forgets finished ones older than keepFor.
func (s *Service) insertJob(ctx context.Context, r jobRow) error {
	if s.db == nil {
		return nil
	}
	now := s.now().UnixMilli()
	if _, err := s.db.Exec(ctx, `DELETE FROM admin_room_jobs WHERE created_ts < $1 AND status IN ($2, $3)`,
		s.now().Add(-keepFor).UnixMilli(), StatusComplete, StatusFailed); err != nil {
		return fmt.Errorf("prune admin room jobs: %w", err)
	}
	if _, err := s.db.Exec(ctx, `INSERT INTO admin_room_jobs (job_id, kind, room_id, status, created_ts, updated_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		r.id, r.kind, r.roomID, r.status, r.created.UnixMilli(), now); err != nil {
		return fmt.Errorf("insert admin room job %s: %w", r.id, err)
	}
	return nil
}

// saveJob stores a job's status; a failure is logged (the status in
// memory stays right for this process).
func (s *Service) saveJob(ctx context.Context, r jobRow) {
	if s.db == nil {
		return
	}
	res, err := json.Marshal(r.result)
	if err == nil {
		_, err = s.db.Exec(ctx, `UPDATE admin_room_jobs SET status = $2, error = $3, result = $4, updated_ts = $5 WHERE job_id = $1`,
			r.id, r.status, r.errText, string(res), s.now().UnixMilli())
	}
	if err != nil {
		logging.From(ctx).WithError(err).WithField("room_id", r.roomID).Warn("cannot store an admin room job's status")
	}
}

// heartbeat touches the job's row until stopped, so that other processes
// (and this one after a restart) tell it from a lost job.
func (s *Service) heartbeat(ctx context.Context, jobID string) (stop func()) {
	if s.db == nil {
		return func() {}
	}
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if _, err := s.db.Exec(ctx, `UPDATE admin_room_jobs SET updated_ts = $2 WHERE job_id = $1`, jobID, s.now().UnixMilli()); err != nil && ctx.Err() == nil {
					logging.From(ctx).WithError(err).Warn("cannot touch an admin room job")
				}
			case <-done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { close(done); <-ended }
}

// loadJobs reads the stored jobs matching where (with arg), oldest first.
// A running job whose process is gone is marked failed (errInterrupted).
func (s *Service) loadJobs(ctx context.Context, where string, arg any) ([]jobRow, error) {
	if s.db == nil {
		return nil, nil
	}
	rows, err := s.db.Query(ctx, `SELECT job_id, kind, room_id, status, error, result, created_ts, updated_ts FROM admin_room_jobs WHERE `+where+` ORDER BY created_ts`, arg)
	if err != nil {
		return nil, fmt.Errorf("read admin room jobs: %w", err)
	}
	var out []jobRow
	for rows.Next() {
		var r jobRow
		var result string
		var created, updated int64
		if err := rows.Scan(&r.id, &r.kind, &r.roomID, &r.status, &r.errText, &result, &created, &updated); err != nil {
			rows.Close()
			return nil, err
		}
		if result != "" {
			if err := json.Unmarshal([]byte(result), &r.result); err != nil {
				rows.Close()
				return nil, fmt.Errorf("admin room job %s: %w", r.id, err)
			}
		}
		r.created, r.updated = time.UnixMilli(created), time.UnixMilli(updated)
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i, r := range out {
		if running(r.status) && s.now().Sub(r.updated) > staleAfter {
			out[i].status, out[i].errText = StatusFailed, errorText(errInterrupted)
			// Only if nobody touched it meanwhile.
			if _, err := s.db.Exec(ctx, `UPDATE admin_room_jobs SET status = $2, error = $3, updated_ts = $4 WHERE job_id = $1 AND updated_ts = $5`,
				r.id, StatusFailed, out[i].errText, s.now().UnixMilli(), r.updated.UnixMilli()); err != nil {
				return nil, fmt.Errorf("mark admin room job %s failed: %w", r.id, err)
			}
			logging.From(ctx).WithFields(map[string]any{"room_id": r.roomID, "job_id": r.id}).Warn("an admin room job was interrupted by a restart: marked failed")
		}
	}
	return out, nil
}

// runningDeletion is the delete_id of a deletion of the room still
// running in any process ("" when none).
func (s *Service) runningDeletion(ctx context.Context, roomID string) (string, error) {
	rows, err := s.loadJobs(ctx, `room_id = $1 AND kind = 'delete'`, roomID)
	if err != nil {
		return "", err
	}
	for _, r := range rows {
		if running(r.status) {
			return r.id, nil
		}
	}
	return "", nil
}
