package syncapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
)

// Server-side aggregations (unsigned."m.relations") of the relation types
// the spec aggregates: m.thread, m.replace and m.reference. Annotations
// (reactions) are listed by /relations only.
//
// The aggregate of a parent event is the same for every reader and is kept
// in a bounded cache (relCache), including "no relations" for the many
// events without children. What differs per reader — the latest thread
// event rendered for their device and current_user_participated — is
// worked out when an event is served, never stored in the cache.
//
// Invalidation: a child's notice (or the redaction of a child) drops its
// parent's entry. A reader that loaded aggregates from the database stores
// them only if no child notice arrived while it was loading (relCache.gen),
// so a slow reader can never put back an aggregate older than the notice.

// The relation types the server aggregates.
const (
	relThread    = "m.thread"
	relReplace   = "m.replace"
	relReference = "m.reference"
)

// aggregate is what the server bundles for one parent event.
type aggregate struct {
	threadCount  int
	threadLatest *clientEvent
	// threadSenders are the senders of the thread's events.
	threadSenders map[string]bool
	edit          *editRef
	references    []string
}

type editRef struct {
	EventID string `json:"event_id"`
	TS      int64  `json:"origin_server_ts"`
	Sender  string `json:"sender"`
}

func (a *aggregate) empty() bool {
	return a.threadCount == 0 && a.edit == nil && len(a.references) == 0
}

var noRelations = &aggregate{}

type relCache struct {
	mu  sync.Mutex
	gen uint64
	c   *lru.Cache[string, *aggregate]
	// parents remembers the targets of recent child notices, so that an
	// event whose children arrived before it (possible over federation)
	// is not taken for an event without relations.
	parents *lru.Cache[string, struct{}]
}

func newRelCache(size int) *relCache {
	return &relCache{c: lru.New[string, *aggregate]("relation_aggregates", size),
		parents: lru.New[string, struct{}]("relation_parents", size)}
}

// noteNew records that a just committed event has no children yet: the
// events of a live /sync are then served without a query. Its children's
// notices come after it and drop the entry again.
func (rc *relCache) noteNew(id string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if _, seen := rc.parents.Peek(id); seen {
		return
	}
	if _, ok := rc.c.Peek(id); !ok {
		rc.c.Put(id, noRelations)
	}
}

// childArrived drops a parent's aggregate when a child commits.
func (rc *relCache) childArrived(parent string) {
	rc.mu.Lock()
	rc.gen++
	rc.c.Remove(parent)
	rc.parents.Put(parent, struct{}{})
	rc.mu.Unlock()
}

func (rc *relCache) generation() uint64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.gen
}

// invalidate drops a parent's aggregate (a child arrived or was redacted).
func (rc *relCache) invalidate(parent string) {
	rc.mu.Lock()
	rc.gen++
	rc.c.Remove(parent)
	rc.mu.Unlock()
}

// purge drops everything (a gap in the notices, or a redaction whose
// target is not known here).
func (rc *relCache) purge() {
	rc.mu.Lock()
	rc.gen++
	rc.c.Purge()
	rc.mu.Unlock()
}

// store keeps loaded aggregates unless a child arrived since gen.
func (rc *relCache) store(gen uint64, aggs map[string]*aggregate) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.gen != gen {
		return
	}
	for id, a := range aggs {
		rc.c.Put(id, a)
	}
}

// aggregated tells whether a relation type is bundled into its parent.
func aggregated(relType string) bool {
	return relType == relThread || relType == relReplace || relType == relReference
}

// relationsOnNotice keeps the aggregate cache right as events commit. It
// runs before the rendered-event cache learns about a redaction.
func (s *Service) relationsOnNotice(n *roomserver.Notice) {
	if n.RelatesTo != "" && aggregated(n.RelType) {
		s.rel.childArrived(n.RelatesTo)
	}
	if n.StateKey == nil {
		s.rel.noteNew(n.EventID)
	}
	if n.Redacts == "" {
		return
	}
	old, ok := s.rendered.Peek(n.Redacts)
	if !ok {
		// Which parent the redacted event belonged to is not known here.
		s.rel.purge()
		return
	}
	if old.relTo != "" {
		s.rel.invalidate(old.relTo)
	}
	// A redacted parent loses its m.replace aggregation.
	s.rel.invalidate(n.Redacts)
}

// aggregates returns the aggregates of the given events, from the cache or
// the database (a few queries for all of them together).
func (s *Service) aggregates(ctx context.Context, evs []*clientEvent) (map[string]*aggregate, error) {
	out := make(map[string]*aggregate, len(evs))
	var missing []*clientEvent
	for _, e := range evs {
		if e.stateKey != nil {
			continue
		}
		if a, ok := s.rel.c.Get(e.eventID); ok {
			if !a.empty() {
				out[e.eventID] = a
			}
			continue
		}
		missing = append(missing, e)
	}
	if len(missing) == 0 {
		return out, nil
	}
	gen := s.rel.generation()
	loaded, err := s.loadAggregates(ctx, missing)
	if err != nil {
		return nil, err
	}
	s.rel.store(gen, loaded)
	for id, a := range loaded {
		if !a.empty() {
			out[id] = a
		}
	}
	return out, nil
}

// loadAggregates reads the aggregates of parents from the database. Most
// events have no children: that costs one indexed query for all of them.
func (s *Service) loadAggregates(ctx context.Context, parents []*clientEvent) (map[string]*aggregate, error) {
	byID := make(map[string]*clientEvent, len(parents))
	ids := make([]string, 0, len(parents))
	out := make(map[string]*aggregate, len(parents))
	for _, p := range parents {
		byID[p.eventID] = p
		ids = append(ids, p.eventID)
		out[p.eventID] = noRelations
	}
	rows, err := s.db.Query(ctx, `SELECT relates_to, rel_type, room_id, COUNT(*), MAX(pos) FROM events
WHERE relates_to IN ($1) AND rel_type IN ('m.thread', 'm.replace', 'm.reference') AND redacted_by IS NULL
GROUP BY relates_to, rel_type, room_id`, ids)
	if err != nil {
		return nil, fmt.Errorf("relation counts: %w", err)
	}
	type found struct {
		parent, relType string
		count           int
		latest          int64
	}
	var list []found
	for rows.Next() {
		var f found
		var room string
		if err := rows.Scan(&f.parent, &f.relType, &room, &f.count, &f.latest); err != nil {
			rows.Close()
			return nil, err
		}
		if p := byID[f.parent]; p != nil && p.roomID == room {
			list = append(list, f)
		}
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return nil, fmt.Errorf("relation counts: %w", err)
	}
	rows.Close()
	if len(list) == 0 {
		return out, nil
	}
	get := func(id string) *aggregate {
		a := out[id]
		if a == noRelations {
			a = &aggregate{}
			out[id] = a
		}
		return a
	}
	var threads, edits, refs []string
	var latest []int64
	for _, f := range list {
		switch f.relType {
		case relThread:
			get(f.parent).threadCount = f.count
			threads = append(threads, f.parent)
			latest = append(latest, f.latest)
		case relReplace:
			edits = append(edits, f.parent)
		case relReference:
			refs = append(refs, f.parent)
		}
	}
	if len(threads) > 0 {
		evs, err := s.eventsByPos(ctx, latest)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if a := out[e.relTo]; a != nil && a != noRelations {
				a.threadLatest = e
			}
		}
		rows, err := s.db.Query(ctx, `SELECT relates_to, room_id, sender FROM events WHERE relates_to IN ($1) AND rel_type = 'm.thread' AND redacted_by IS NULL
GROUP BY relates_to, room_id, sender`, threads)
		if err != nil {
			return nil, fmt.Errorf("thread participants: %w", err)
		}
		for rows.Next() {
			var parent, room, sender string
			if err := rows.Scan(&parent, &room, &sender); err != nil {
				rows.Close()
				return nil, err
			}
			// Children in another room do not count (as in the counts above).
			if p := byID[parent]; p == nil || p.roomID != room {
				continue
			}
			a := get(parent)
			if a.threadSenders == nil {
				a.threadSenders = map[string]bool{}
			}
			a.threadSenders[sender] = true
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return nil, err
		}
		rows.Close()
	}
	if len(edits) > 0 {
		// A valid edit comes from the original's sender, is not a state
		// event, and the original is not itself an edit; the latest by
		// origin_server_ts, then by event ID, wins.
		rows, err := s.db.Query(ctx, `SELECT relates_to, room_id, event_id, sender, origin_ts FROM events
WHERE relates_to IN ($1) AND rel_type = 'm.replace' AND redacted_by IS NULL AND state_key IS NULL`, edits)
		if err != nil {
			return nil, fmt.Errorf("edits: %w", err)
		}
		for rows.Next() {
			var parent, room string
			var e editRef
			if err := rows.Scan(&parent, &room, &e.EventID, &e.Sender, &e.TS); err != nil {
				rows.Close()
				return nil, err
			}
			p := byID[parent]
			if p == nil || p.roomID != room || p.sender != e.Sender || p.relType == relReplace || p.redacted != "" {
				continue
			}
			a := get(parent)
			if a.edit == nil || e.TS > a.edit.TS || e.TS == a.edit.TS && e.EventID > a.edit.EventID {
				ec := e
				a.edit = &ec
			}
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return nil, err
		}
		rows.Close()
	}
	if len(refs) > 0 {
		rows, err := s.db.Query(ctx, `SELECT relates_to, room_id, event_id FROM events WHERE relates_to IN ($1) AND rel_type = 'm.reference' AND redacted_by IS NULL ORDER BY pos`, refs)
		if err != nil {
			return nil, fmt.Errorf("references: %w", err)
		}
		for rows.Next() {
			var parent, room, id string
			if err := rows.Scan(&parent, &room, &id); err != nil {
				rows.Close()
				return nil, err
			}
			if p := byID[parent]; p == nil || p.roomID != room {
				continue
			}
			get(parent).references = append(get(parent).references, id)
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return nil, err
		}
		rows.Close()
	}
	// Aggregates whose only children were invalid (an edit by someone else)
	// are "no relations".
	for id, a := range out {
		if a != noRelations && a.empty() {
			out[id] = noRelations
		}
	}
	return out, nil
}

// bundle renders the m.relations object of one parent for one reader.
func (a *aggregate) bundle(parent *clientEvent, user, device string, now int64) []byte {
	b := make([]byte, 0, 256)
	b = append(b, '{')
	first := true
	sep := func() {
		if !first {
			b = append(b, ',')
		}
		first = false
	}
	if a.threadCount > 0 && a.threadLatest != nil {
		sep()
		b = append(b, `"m.thread":{"latest_event":`...)
		b = a.threadLatest.appendJSON(b, now, user, device, nil)
		b = append(b, `,"count":`...)
		b = strconv.AppendInt(b, int64(a.threadCount), 10)
		b = append(b, `,"current_user_participated":`...)
		b = strconv.AppendBool(b, parent.sender == user || a.threadSenders[user])
		b = append(b, '}')
	}
	if a.edit != nil && parent.redacted == "" {
		sep()
		b = append(b, `"m.replace":`...)
		js, _ := json.Marshal(a.edit)
		b = append(b, js...)
	}
	if len(a.references) > 0 {
		sep()
		b = append(b, `"m.reference":{"chunk":[`...)
		for i, id := range a.references {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"event_id":`...)
			b = appendString(b, id)
			b = append(b, '}')
		}
		b = append(b, "]}"...)
	}
	if first {
		return nil
	}
	return append(b, '}')
}

// appendTimeline is appendEvents for room events a client reads (in /sync,
// /messages, /context, /event, /search, /relations, /threads): each carries
// the reader's membership at it in unsigned.membership (readermembership.go),
// and each parent of related events its aggregations in
// unsigned."m.relations", worked out for this reader.
func (s *Service) appendTimeline(ctx context.Context, dst []json.RawMessage, evs []*clientEvent, now int64, user, device string, federation bool) ([]json.RawMessage, error) {
	return s.appendTimelineKnown(ctx, dst, evs, now, user, device, federation, nil)
}

// appendTimelineKnown is appendTimeline with the reader's membership
// histories the caller has loaded already (by room; see readerMemberships).
func (s *Service) appendTimelineKnown(ctx context.Context, dst []json.RawMessage, evs []*clientEvent, now int64, user, device string, federation bool, known map[string][]change) ([]json.RawMessage, error) {
	start := len(dst)
	dst, err := s.appendEvents(ctx, dst, evs, now, user, device, federation)
	if err != nil || federation || len(evs) == 0 || len(dst)-start != len(evs) {
		return dst, err
	}
	if user != "" {
		ms, err := s.readerMemberships(ctx, user, evs, known)
		if err != nil {
			return nil, err
		}
		for i, m := range ms {
			dst[start+i] = appendMembership(dst[start+i], m)
		}
	}
	aggs, err := s.aggregates(ctx, evs)
	if err != nil {
		return nil, err
	}
	// The latest event of a thread is shown only to readers who may see
	// it: a reader not joined now (who left, or peeks) may not see replies
	// sent after they left. Their visibility is loaded only then.
	var vis map[string]*visibility
	for i, e := range evs {
		a := aggs[e.eventID]
		if a == nil {
			continue
		}
		if l := a.threadLatest; l != nil && !s.n.Joined(user, e.roomID) {
			if vis == nil {
				vis = map[string]*visibility{}
			}
			if vis[e.roomID] == nil {
				if err := loadVisibilities(ctx, s.db, []string{e.roomID}, user, vis); err != nil {
					return nil, err
				}
			}
			if !vis[e.roomID].canSee(l.pos, l.sender, l.typ, l.stateKey) {
				// Without the thread: its count and latest reply are news
				// from after the reader's time in the room.
				na := *a
				na.threadCount, na.threadLatest, na.threadSenders = 0, nil, nil
				a = &na
			}
		}
		if b := a.bundle(e, user, device, now); b != nil {
			dst[start+i] = withUnsigned(dst[start+i], "m.relations", b)
		}
	}
	return dst, nil
}

// withUnsigned adds a field to the unsigned object of an event rendered by
// clientEvent.appendJSON, which always ends with the unsigned object.
func withUnsigned(js []byte, key string, val []byte) []byte {
	if !bytes.HasSuffix(js, []byte("}}")) {
		return js
	}
	out := make([]byte, 0, len(js)+len(key)+len(val)+4)
	out = append(out, js[:len(js)-2]...)
	out = append(out, ',')
	out = appendString(out, key)
	out = append(out, ':')
	out = append(out, val...)
	return append(out, "}}"...)
}

// RelationsRequest is a parsed GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
type RelationsRequest struct {
	UserID, DeviceID, RoomID, EventID string
	RelType, EventType                string
	From, To                          string
	// Forwards is dir=f (oldest first); the default is newest first.
	Forwards bool
	Limit    int
	Recurse  bool
}

// RelationsResponse is the answer of /relations.
type RelationsResponse struct {
	Chunk          []json.RawMessage `json:"chunk"`
	NextBatch      string            `json:"next_batch,omitempty"`
	PrevBatch      string            `json:"prev_batch,omitempty"`
	RecursionDepth *int              `json:"recursion_depth,omitempty"`
}

// maxRecursion is how deep recurse=true follows relations of relations (the
// spec asks for at least 3).
const maxRecursion = 3

// maxRelationParents bounds the events whose children one recursive
// request lists.
const maxRelationParents = 1000

// Relations lists the children of an event the user may see, paginated by
// stream position.
func (s *Service) Relations(ctx context.Context, req RelationsRequest) (*RelationsResponse, error) {
	if req.EventType != "" && req.RelType == "" {
		return nil, merr.InvalidParam("An event type filter needs a relation type")
	}
	parent, vis, err := s.visibleEvent(ctx, req.RoomID, req.EventID, req.UserID)
	if err != nil {
		return nil, err
	}
	limit := req.Limit
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	var from, to int64 = -1, -1
	if req.From != "" {
		if from, err = parsePageToken(req.From); err != nil {
			return nil, err
		}
	}
	if req.To != "" {
		if to, err = parsePageToken(req.To); err != nil {
			return nil, err
		}
	}
	parents := []string{parent.eventID}
	depth := 1 // direct children
	if req.Recurse {
		seen := map[string]bool{parent.eventID: true}
		level := []string{parent.eventID}
		for depth < maxRecursion && len(parents) < maxRelationParents {
			next, err := s.childIDs(ctx, req.RoomID, level, seen)
			if err != nil {
				return nil, err
			}
			if len(next) == 0 {
				break
			}
			parents = append(parents, next...)
			level = next
			depth++
		}
		if len(parents) > maxRelationParents {
			parents = parents[:maxRelationParents]
		}
	}
	ceiling := s.n.Current().Events
	if vis.current != "join" && vis.current != "invite" && len(vis.membership) > 0 {
		ceiling = vis.membership[len(vis.membership)-1].pos
	}
	q := `SELECT ` + roomserver.EventColumns + ` FROM events WHERE relates_to IN ($1) AND room_id = $2 AND redacted_by IS NULL
AND ($3 = '' OR rel_type = $3) AND ($4 = '' OR type = $4)`
	var args []any
	if req.Forwards {
		lower := max(from, 0)
		upper := ceiling
		if to >= 0 {
			upper = min(upper, to)
		}
		q += ` AND pos > $5 AND pos <= $6 ORDER BY pos ASC LIMIT $7`
		args = []any{parents, req.RoomID, req.RelType, req.EventType, lower, upper, limit}
	} else {
		upper := ceiling
		if from >= 0 {
			upper = min(upper, from)
		}
		q += ` AND pos <= $5 AND pos > $6 ORDER BY pos DESC LIMIT $7`
		args = []any{parents, req.RoomID, req.RelType, req.EventType, upper, max(to, 0), limit}
	}
	scanned, err := s.queryEvents(ctx, "relations of "+req.EventID, q, args...)
	if err != nil {
		return nil, err
	}
	var chunk []*clientEvent
	for _, e := range scanned {
		if vis.canSee(e.pos, e.sender, e.typ, e.stateKey) {
			chunk = append(chunk, e)
		}
	}
	resp := &RelationsResponse{Chunk: []json.RawMessage{}}
	if resp.Chunk, err = s.appendTimeline(ctx, resp.Chunk, chunk, nowMS(), req.UserID, req.DeviceID, false); err != nil {
		return nil, err
	}
	if len(scanned) == limit {
		last := scanned[len(scanned)-1].pos
		if req.Forwards {
			resp.NextBatch = pageToken(last)
		} else {
			resp.NextBatch = pageToken(last - 1)
		}
	}
	if req.From != "" {
		resp.PrevBatch = req.From
	}
	if req.Recurse {
		resp.RecursionDepth = &depth
	}
	return resp, nil
}

// childIDs lists the children of events not seen yet, marking them seen.
func (s *Service) childIDs(ctx context.Context, roomID string, parents []string, seen map[string]bool) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT event_id FROM events WHERE relates_to IN ($1) AND room_id = $2 AND redacted_by IS NULL`, parents, roomID)
	if err != nil {
		return nil, fmt.Errorf("children of relations: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, rows.Err()
}
