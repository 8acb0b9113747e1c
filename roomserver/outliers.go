package roomserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Events outside the timeline (table event_outliers): outliers, rejected
// and soft-failed events. They have no stream position and are never
// served to clients; the auth rules and the state of later events may use
// outliers and soft-failed events, never rejected ones.

// Statuses of an event outside the timeline.
const (
	statusOutlier    = "outlier"
	statusRejected   = "rejected"
	statusSoftFailed = "soft_failed"
)

// outlier is a row of event_outliers.
type outlier struct {
	status, reason string
	snapshot       int64
	json           []byte
}

// selectOutliers reads the rows of the given event IDs.
func selectOutliers(ctx context.Context, q storage.Querier, ids []string) (map[string]outlier, error) {
	ids = storableIDs(ids)
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := q.Query(ctx, `SELECT event_id, status, reason, snapshot_id, json FROM event_outliers WHERE event_id IN ($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("select outliers: %w", err)
	}
	defer rows.Close()
	out := map[string]outlier{}
	for rows.Next() {
		var id, js string
		var o outlier
		if err := rows.Scan(&id, &o.status, &o.reason, &o.snapshot, &js); err != nil {
			return nil, err
		}
		o.json = []byte(js)
		out[id] = o
	}
	return out, rows.Err()
}

// eventStatus tells, in one query, whether an event is in the timeline
// or stored outside it.
func eventStatus(ctx context.Context, q storage.Querier, id string) (inTimeline, outside bool, err error) {
	if !storage.StorableText(id) {
		return false, false, nil
	}
	rows, err := q.Query(ctx, `SELECT 1 FROM events WHERE event_id = $1 UNION ALL SELECT 2 FROM event_outliers WHERE event_id = $1`, id)
	if err != nil {
		return false, false, fmt.Errorf("event status %s: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var n int
		if err := rows.Scan(&n); err != nil {
			return false, false, err
		}
		inTimeline, outside = inTimeline || n == 1, outside || n == 2
	}
	return inTimeline, outside, rows.Err()
}

// storeOutlier keeps an event outside the timeline. A rejected or
// soft-failed verdict replaces a plain outlier row; a row already holding
// a verdict stays.
func storeOutlier(ctx context.Context, tx *storage.Tx, pdu gomatrixserverlib.PDU, status, reason string, snapshot int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO event_outliers (event_id, room_id, status, reason, snapshot_id, json) VALUES ($1,$2,$3,$4,$5,$6)
ON CONFLICT (event_id) DO UPDATE SET status = excluded.status, reason = excluded.reason, snapshot_id = excluded.snapshot_id
WHERE event_outliers.status = 'outlier'`,
		pdu.EventID(), pdu.RoomID().String(), status, reason, snapshot, string(pdu.JSON()))
	if err != nil {
		return fmt.Errorf("store %s event %s: %w", status, pdu.EventID(), err)
	}
	return nil
}

// reject stores an event that failed the auth rules, so that it is refused
// again without work, and answers the refusal (403 M_FORBIDDEN).
func (s *Service) reject(ctx context.Context, pdu gomatrixserverlib.PDU, reason string) error {
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		return storeOutlier(ctx, tx, pdu, statusRejected, reason, 0)
	})
	if err != nil {
		return err
	}
	return merr.Forbidden("%s", reason)
}

// StoreOutliers keeps events known by their ID alone (the auth chain of a
// room joined on another server, an invite's stub), each checked against
// the auth rules with its own auth events, in the given order (auth events
// first). Rejected ones are kept as such; ones already known are skipped.
func (s *Service) StoreOutliers(ctx context.Context, roomID string, pdus []gomatrixserverlib.PDU) error {
	return s.withRoom(ctx, roomID, func(r *room) error {
		for _, pdu := range pdus {
			if pdu.RoomID().String() != roomID {
				return fmt.Errorf("outlier %s is in another room", pdu.EventID())
			}
			if err := checkStorable(pdu); err != nil {
				return err
			}
			known, err := s.knownPDU(ctx, pdu.EventID())
			if err != nil {
				return err
			}
			if known {
				continue
			}
			status, reason := statusOutlier, ""
			if err := s.checkOwnAuth(ctx, r, pdu); err != nil {
				status, reason = statusRejected, err.Error()
			}
			if err := s.db.Write(ctx, func(tx *storage.Tx) error {
				return storeOutlier(ctx, tx, pdu, status, reason, 0)
			}); err != nil {
				return err
			}
		}
		return nil
	})
}

// knownPDU tells whether an event is stored, in the timeline or outside it.
func (s *Service) knownPDU(ctx context.Context, id string) (bool, error) {
	inTimeline, outside, err := eventStatus(ctx, s.db, id)
	return inTimeline || outside, err
}

// checkOwnAuth applies the auth rules to an event against its own
// auth_events (the room's create event stands in for itself in room
// versions whose create event is not listed).
func (s *Service) checkOwnAuth(ctx context.Context, r *room, pdu gomatrixserverlib.PDU) error {
	ids := pdu.AuthEventIDs()
	pdus, err := s.loadPDUs(ctx, r.version, ids)
	if err != nil {
		return err
	}
	authState := stateProvider{}
	for _, id := range ids {
		p := pdus[id]
		if p == nil {
			return fmt.Errorf("auth event %s is unknown", id)
		}
		if sk := p.StateKey(); sk != nil {
			authState[stateKey{p.Type(), *sk}] = p
		}
	}
	if create := r.state[stateKey{"m.room.create", ""}]; create != nil && authState[stateKey{"m.room.create", ""}] == nil && r.version.DomainlessRoomIDs() {
		authState[stateKey{"m.room.create", ""}] = create
	}
	if err := gomatrixserverlib.Allowed(pdu, authState, userIDForSender); err != nil {
		return errors.New(authMessage(err))
	}
	return nil
}

// outlierEvents returns the soft-failed and plain outlier events among ids
// as Events (no position; Snapshot is the state before a soft-failed one).
func outlierEvents(ctx context.Context, q storage.Querier, verImpl gomatrixserverlib.IRoomVersion, ids []string) ([]Event, error) {
	rows, err := selectOutliers(ctx, q, ids)
	if err != nil {
		return nil, err
	}
	var out []Event
	for id, o := range rows {
		if o.status == statusRejected {
			continue
		}
		p, err := verImpl.NewEventFromTrustedJSONWithEventID(id, o.json, false)
		if err != nil {
			return nil, fmt.Errorf("parse outlier %s: %w", id, err)
		}
		ev := eventFromPDU(p)
		ev.Snapshot = o.snapshot
		out = append(out, ev)
	}
	return out, nil
}

// SoftFailed is InputEvent's answer for an event that passed the auth
// rules at its place in the DAG but not against the room's current state:
// the event is kept (later events may build on it) and never shown to
// clients. The federation API accepts such an event without passing it on.
type SoftFailed struct{ Reason string }

func (e *SoftFailed) Error() string { return "soft-failed: " + e.Reason }

// softFail keeps a soft-failed event with the state before it, so that
// events built on it find their state.
func (s *Service) softFail(ctx context.Context, r *room, pdu gomatrixserverlib.PDU, before map[stateKey]gomatrixserverlib.PDU, reason string) error {
	if err := s.storeWithState(ctx, r, pdu, before, statusSoftFailed, reason); err != nil {
		return err
	}
	return &SoftFailed{Reason: reason}
}

// storeWithState keeps an event outside the timeline together with the
// state before it, stored as a snapshot (a difference from the room's
// current one where it can be).
func (s *Service) storeWithState(ctx context.Context, r *room, pdu gomatrixserverlib.PDU, before map[stateKey]gomatrixserverlib.PDU, status, reason string) error {
	sw := s.newSnapshot(r.state, r.snapshot, r.chainLen, before, nil)
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := insertSnapshot(ctx, tx, sw.id, r.id, sw.parent, sw.chainLen, sw.entries); err != nil {
			return err
		}
		return storeOutlier(ctx, tx, pdu, status, reason, sw.id)
	})
}
