package syncapi

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/haven-chat/haven/roomserver"
)

// The event reader every endpoint shares (/sync, /messages, /context,
// /event, /relations, /threads, /search): events read by position or ID,
// rendered once in the client format through the rendered-events cache,
// and written for a reader (age, transaction_id, redacted_because).

func (s *Service) renderCached(e *roomserver.Event) (*clientEvent, error) {
	if ce, ok := s.rendered.Get(e.EventID); ok && ce.redacted == e.RedactedBy {
		return ce, nil
	}
	ce, err := render(e)
	if err != nil {
		return nil, err
	}
	s.rendered.Put(e.EventID, ce)
	return ce, nil
}

// queryEvents runs a query selecting roomserver.EventColumns and renders
// its rows through the cache, in row order. what names the query in errors.
func (s *Service) queryEvents(ctx context.Context, what string, q string, args ...any) ([]*clientEvent, error) {
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []*clientEvent
	for rows.Next() {
		e, err := roomserver.ScanEvent(rows)
		if err != nil {
			return nil, err
		}
		ce, err := s.renderCached(&e)
		if err != nil {
			return nil, err
		}
		out = append(out, ce)
	}
	return out, rows.Err()
}

// eventsByID renders events by ID through the cache.
func (s *Service) eventsByID(ctx context.Context, ids []string) (map[string]*clientEvent, error) {
	out := make(map[string]*clientEvent, len(ids))
	var missing []string
	for _, id := range ids {
		if ce, ok := s.rendered.Get(id); ok {
			out[id] = ce
		} else {
			missing = append(missing, id)
		}
	}
	for len(missing) > 0 {
		n := min(len(missing), 500)
		evs, err := roomserver.EventsByID(ctx, s.db, missing[:n])
		if err != nil {
			return nil, err
		}
		missing = missing[n:]
		for i := range evs {
			ce, err := s.renderCached(&evs[i])
			if err != nil {
				return nil, err
			}
			out[ce.eventID] = ce
		}
	}
	return out, nil
}

// appendEvents renders events for the user's device, with redacted_because
// where due.
func (s *Service) appendEvents(ctx context.Context, dst []json.RawMessage, evs []*clientEvent, now int64, user, device string, federation bool) ([]json.RawMessage, error) {
	var redactions map[string]*clientEvent
	for _, e := range evs {
		if e.redacted != "" {
			if redactions == nil {
				ids := []string{}
				for _, x := range evs {
					if x.redacted != "" {
						ids = append(ids, x.redacted)
					}
				}
				var err error
				if redactions, err = s.eventsByID(ctx, ids); err != nil {
					return nil, err
				}
			}
		}
	}
	if federation {
		// The stored (federation) form is not kept in memory: read it.
		ids := make([]string, len(evs))
		for i, e := range evs {
			ids[i] = e.eventID
		}
		stored, err := roomserver.EventsByID(ctx, s.db, ids)
		if err != nil {
			return nil, err
		}
		byID := make(map[string]json.RawMessage, len(stored))
		for _, e := range stored {
			byID[e.EventID] = e.JSON
		}
		for _, e := range evs {
			if js, ok := byID[e.eventID]; ok {
				dst = append(dst, js)
			}
		}
		return dst, nil
	}
	for _, e := range evs {
		var because []byte
		if r := redactions[e.redacted]; r != nil {
			because = r.JSON(now)
		}
		// One allocation: room for the age, a transaction ID and the
		// reader's membership (appendTimeline) besides what is stored.
		buf := make([]byte, 0, len(e.head)+len(e.unsigned)+len(because)+len(e.txnID)+96)
		dst = append(dst, e.appendJSON(buf, now, user, device, because))
	}
	return dst, nil
}
