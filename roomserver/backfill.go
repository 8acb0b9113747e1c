package roomserver

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/storage"
)

// Bounds of one backfill.
const (
	maxBackfill     = 100 // events asked for at once
	maxBackfillFrom = 5   // backward extremities it starts from
	// backfillMissTTL is how long a gap no server gave history for is
	// not asked about again.
	backfillMissTTL = 10 * time.Minute
)

// Backfill fetches the room's history from before a gap in what this
// server has (from the servers in the room, /backfill): the gaps whose
// events sit at topological depth belowTopo or lower, nearest first. Each
// event is checked as on receipt (its own auth events, then the state
// before it — fetched with /state_ids where its parents are unknown) and
// stored with a negative position, so /messages pages into it in
// topological order while /sync and every stream reader, which ask for
// positions above a token, never see old history as new. It answers how
// many events it stored; 0 when there is nothing to fetch or no server
// gives anything (then that gap is not asked about again for a while).
func (s *Service) Backfill(ctx context.Context, roomID string, belowTopo int64, limit int) (int, error) {
	f := s.opts.Fetcher
	if f == nil {
		return 0, nil
	}
	limit = min(max(limit, 10), maxBackfill)
	from, _, err := backwardGaps(ctx, s.db, roomID, belowTopo, maxBackfillFrom)
	if err != nil || len(from) == 0 {
		return 0, err
	}
	if at, ok := s.noBackfill.Get(from[0]); ok && time.Since(at) < backfillMissTTL {
		return 0, nil
	}
	servers, err := s.JoinedServers(ctx, roomID)
	if err != nil {
		return 0, err
	}
	n, err := s.backfillFrom(ctx, roomID, from, servers, limit)
	if err == nil && n == 0 {
		s.noBackfill.Put(from[0], time.Now())
	}
	return n, err
}

// TopGap is the topological depth of the newest event of the room, at
// belowTopo or lower, that names a prev_event this server does not have:
// where a reader paging back reaches the edge of what is here.
func TopGap(ctx context.Context, q storage.Querier, roomID string, belowTopo int64) (int64, bool, error) {
	_, top, err := backwardGaps(ctx, q, roomID, belowTopo, 1)
	return top, err == nil && top > 0, err
}

// backfillFrom asks the servers in turn for the events before from and
// stores what the first that has some answers.
func (s *Service) backfillFrom(ctx context.Context, roomID string, from, servers []string, limit int) (int, error) {
	f := s.opts.Fetcher
	ver, err := s.RoomVersion(ctx, roomID)
	if err != nil {
		return 0, err
	}
	log := logging.From(ctx).WithField("room_id", roomID)
	var pdus []gomatrixserverlib.PDU
	var origin string
	for _, srv := range servers {
		if srv == s.opts.ServerName {
			continue
		}
		got, err := f.Backfill(ctx, srv, roomID, gomatrixserverlib.RoomVersion(ver), from, limit)
		if err != nil {
			log.WithError(err).WithField("server", srv).Info("Backfill failed")
			continue
		}
		if len(got) > 0 {
			pdus, origin = got, srv
			break
		}
	}
	sort.SliceStable(pdus, func(i, j int) bool { return pdus[i].Depth() < pdus[j].Depth() })
	stored := 0
	for _, pdu := range pdus {
		if pdu.RoomID().String() != roomID {
			continue
		}
		ok, err := s.storeHistory(ctx, origin, pdu)
		if err != nil {
			log.WithError(err).WithField("event_id", pdu.EventID()).Info("Backfilled event not stored")
			continue
		}
		if ok {
			stored++
		}
	}
	return stored, nil
}

// storeHistory stores one backfilled event under the room's history; it
// answers false for an event known already or rejected.
func (s *Service) storeHistory(ctx context.Context, origin string, pdu gomatrixserverlib.PDU) (bool, error) {
	if err := checkStorable(pdu); err != nil {
		return false, err
	}
	if known, err := EventsByID(ctx, s.db, []string{pdu.EventID()}); err != nil || len(known) > 0 {
		return false, err
	}
	// Parents unknown here (the edge of what was fetched): their state
	// comes from origin, kept with them as outliers.
	missing, err := s.unknownPrevs(ctx, pdu)
	if err != nil {
		return false, err
	}
	if len(missing) > maxGapPrevs {
		return false, fmt.Errorf("too many unknown prev_events (%d)", len(missing))
	}
	for _, prev := range missing {
		if err := s.importStateAt(ctx, origin, pdu.RoomID().String(), pdu.Version(), prev); err != nil {
			return false, fmt.Errorf("state at %s: %w", prev, err)
		}
	}
	stored := false
	err = s.withRoom(ctx, pdu.RoomID().String(), func(r *room) error {
		if err := s.checkOwnAuth(ctx, r, pdu); err != nil {
			return s.reject(ctx, pdu, err.Error())
		}
		prevs := pdu.PrevEventIDs()
		before, err := s.stateAfterAll(ctx, r, prevs)
		if err != nil {
			return err
		}
		if err := gomatrixserverlib.Allowed(pdu, stateProvider(before), userIDForSender); err != nil {
			return s.reject(ctx, pdu, authMessage(err))
		}
		sw := s.newSnapshot(r.state, r.snapshot, r.chainLen, before, nil)
		ev := eventFromPDU(pdu)
		ev.Snapshot = sw.id
		read := map[string]int64{}
		if err := selectTopos(ctx, s.db, prevs, read); err != nil {
			return err
		}
		ev.Topo = topoDepth(pdu.Depth(), prevs, func(id string) (int64, bool) { t, ok := read[id]; return t, ok })
		err = s.db.Write(ctx, func(tx *storage.Tx) error {
			ev.Pos = s.histPos.Add(-1)
			if err := insertSnapshot(ctx, tx, sw.id, r.id, sw.parent, sw.chainLen, sw.entries); err != nil {
				return err
			}
			if err := insertEvent(ctx, tx, &ev); err != nil {
				return err
			}
			if err := insertPrevEvents(ctx, tx, r.id, []Event{ev}, [][]string{prevs}); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM event_outliers WHERE event_id = $1`, ev.EventID); err != nil {
				return fmt.Errorf("promote outlier %s: %w", ev.EventID, err)
			}
			return nil
		})
		stored = err == nil
		return err
	})
	if err != nil && inputVerdict(err) {
		return false, nil
	}
	return stored, err
}

// backwardGaps are the room's backward extremities named by events at
// topological depth belowTopo or lower, nearest first (by the depth of the
// events that name them), and that depth of the first.
func backwardGaps(ctx context.Context, q storage.Querier, roomID string, belowTopo int64, n int) ([]string, int64, error) {
	rows, err := q.Query(ctx, `SELECT p.prev_event_id, MAX(e.topo) AS t FROM prev_events p JOIN events e ON e.event_id = p.event_id
WHERE p.room_id = $1 AND e.topo <= $2
AND NOT EXISTS (SELECT 1 FROM events x WHERE x.event_id = p.prev_event_id)
AND NOT EXISTS (SELECT 1 FROM event_outliers o WHERE o.event_id = p.prev_event_id AND o.status <> 'outlier')
GROUP BY p.prev_event_id ORDER BY t DESC, p.prev_event_id LIMIT $3`, roomID, belowTopo, n)
	if err != nil {
		return nil, 0, fmt.Errorf("select backward extremities of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []string
	var top int64
	for rows.Next() {
		var id string
		var t int64
		if err := rows.Scan(&id, &t); err != nil {
			return nil, 0, err
		}
		if len(out) == 0 {
			top = t
		}
		out = append(out, id)
	}
	return out, top, rows.Err()
}
