package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
)

// ThreadsRequest is a parsed GET /rooms/{roomId}/threads.
type ThreadsRequest struct {
	UserID, DeviceID, RoomID string
	// Participated keeps only threads the user started or replied to.
	Participated bool
	From         string
	Limit        int
}

// ThreadsResponse is the answer of /threads.
type ThreadsResponse struct {
	Chunk     []json.RawMessage `json:"chunk"`
	NextBatch string            `json:"next_batch,omitempty"`
}

const threadRounds = 8

// Threads lists the thread roots of a room, the most recently active
// first, each with its m.thread aggregation. The token is the position of
// the latest reply of the last thread returned.
func (s *Service) Threads(ctx context.Context, req ThreadsRequest) (*ThreadsResponse, error) {
	vis, err := s.access(ctx, req.RoomID, req.UserID)
	if err != nil {
		return nil, err
	}
	limit := req.Limit
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 500)
	below := s.n.Current().Events + 1
	if req.From != "" {
		if below, err = parsePageToken(req.From); err != nil {
			return nil, err
		}
	}
	var roots []*clientEvent
	more := false
	batch := limit + 1
	for round := 0; round < threadRounds && len(roots) < limit; round++ {
		rows, err := s.db.Query(ctx, `SELECT relates_to, MAX(pos) FROM events WHERE room_id = $1 AND rel_type = 'm.thread' AND redacted_by IS NULL
GROUP BY relates_to HAVING MAX(pos) < $2 ORDER BY MAX(pos) DESC LIMIT $3`, req.RoomID, below, batch)
		if err != nil {
			return nil, fmt.Errorf("threads of %s: %w", req.RoomID, err)
		}
		var ids []string
		latest := map[string]int64{}
		for rows.Next() {
			var id string
			var pos int64
			if err := rows.Scan(&id, &pos); err != nil {
				rows.Close()
				return nil, err
			}
			ids = append(ids, id)
			latest[id] = pos
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return nil, err
		}
		rows.Close()
		evs, err := s.eventsByID(ctx, ids)
		if err != nil {
			return nil, err
		}
		var candidates []*clientEvent
		for _, id := range ids {
			if e := evs[id]; e != nil && e.roomID == req.RoomID && e.stateKey == nil {
				candidates = append(candidates, e)
			}
		}
		var aggs map[string]*aggregate
		if req.Participated {
			if aggs, err = s.aggregates(ctx, candidates); err != nil {
				return nil, err
			}
		}
		for _, id := range ids {
			if len(roots) == limit {
				more = true
				break
			}
			below = latest[id]
			e := evs[id]
			if e == nil || e.roomID != req.RoomID || e.stateKey != nil || !vis.canSee(e.pos, e.sender, e.typ, e.stateKey) {
				continue
			}
			if req.Participated {
				a := aggs[id]
				if e.sender != req.UserID && (a == nil || !a.threadSenders[req.UserID]) {
					continue
				}
			}
			roots = append(roots, e)
		}
		if len(roots) == limit && len(ids) == batch {
			more = true
		}
		if len(ids) < batch {
			break
		}
		if len(roots) < limit && round == threadRounds-1 {
			more = true
		}
	}
	resp := &ThreadsResponse{Chunk: []json.RawMessage{}}
	if resp.Chunk, err = s.appendTimeline(ctx, resp.Chunk, roots, nowMS(), req.UserID, req.DeviceID, false); err != nil {
		return nil, err
	}
	if more {
		resp.NextBatch = pageToken(below)
	}
	return resp, nil
}
