package syncapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
)

// SearchRequest is a parsed POST /search (the room_events category).
type SearchRequest struct {
	UserID, DeviceID string
	Term             string
	// Keys are the fields searched: content.body, content.name,
	// content.topic; empty means all three.
	Keys []string
	// Rooms (nil: all the user's rooms) and NotRooms narrow the rooms.
	Rooms    *[]string
	NotRooms []string
	// Match is the rest of the filter (types, senders, contains_url); nil
	// matches everything.
	Match func(typ, sender string, hasURL bool) bool
	// Limit is the page size (filter.limit); 0 means 10.
	Limit int
	// OrderBy is "rank" (the default) or "recent".
	OrderBy string
	// Context, when set, asks for events around each result.
	Context *SearchContext
	// GroupBy lists the groupings asked for: "room_id", "sender".
	GroupBy      []string
	IncludeState bool
	// NextBatch continues a previous search.
	NextBatch string
}

// SearchContext is the event_context of a search request.
type SearchContext struct {
	Before, After  int
	IncludeProfile bool
}

// SearchResponse is the answer of /search.
type SearchResponse struct {
	SearchCategories struct {
		RoomEvents RoomEventsResults `json:"room_events"`
	} `json:"search_categories"`
}

// RoomEventsResults is the room_events category of a search answer.
type RoomEventsResults struct {
	Count      int                                `json:"count"`
	Highlights []string                           `json:"highlights"`
	Results    []SearchResult                     `json:"results"`
	NextBatch  string                             `json:"next_batch,omitempty"`
	Groups     map[string]map[string]*SearchGroup `json:"groups,omitempty"`
	State      map[string][]json.RawMessage       `json:"state,omitempty"`
}

// SearchResult is one hit.
type SearchResult struct {
	Rank    float64          `json:"rank"`
	Result  json.RawMessage  `json:"result"`
	Context *SearchEventsCtx `json:"context,omitempty"`
}

// SearchEventsCtx is the context of one hit.
type SearchEventsCtx struct {
	Start        string                   `json:"start"`
	End          string                   `json:"end"`
	EventsBefore []json.RawMessage        `json:"events_before"`
	EventsAfter  []json.RawMessage        `json:"events_after"`
	ProfileInfo  map[string]SearchProfile `json:"profile_info,omitempty"`
}

// SearchProfile is a sender's name and avatar at the time of a hit.
type SearchProfile struct {
	DisplayName *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// SearchGroup is one group of a grouping.
type SearchGroup struct {
	Results   []string `json:"results"`
	Order     int      `json:"order"`
	NextBatch string   `json:"next_batch,omitempty"`
}

var searchKeys = map[string]bool{"content.body": true, "content.name": true, "content.topic": true}

const (
	maxSearchLimit   = 50
	maxSearchContext = 20
	// searchCountCap bounds the count of hits (the spec's count is an estimate).
	searchCountCap = 1000
	// searchRounds bounds how many batches one page may scan when most
	// hits are invisible to the user.
	searchRounds = 8
	// rankWindow is how many of the newest hits order_by rank ranks.
	rankWindow = 500
)

// hit is one row of the full-text index that the user may see.
type hit struct {
	ev   *clientEvent
	rank float64
}

// Search runs a full-text search over the events of every room the user is
// or was in, keeping only the events they may see (history visibility and
// their membership at the time).
func (s *Service) Search(ctx context.Context, req SearchRequest) (*SearchResponse, error) {
	keys := req.Keys
	if len(keys) == 0 {
		keys = []string{"content.body", "content.name", "content.topic"}
	}
	for _, k := range keys {
		if !searchKeys[k] {
			return nil, merr.InvalidParam("Unknown search key %q: use content.body, content.name or content.topic", k)
		}
	}
	order := req.OrderBy
	if order == "" {
		order = "rank"
	}
	if order != "rank" && order != "recent" {
		return nil, merr.InvalidParam("order_by must be rank or recent")
	}
	for _, g := range req.GroupBy {
		if g != "room_id" && g != "sender" {
			return nil, merr.InvalidParam("Unknown grouping %q: use room_id or sender", g)
		}
	}
	limit := req.Limit
	if limit <= 0 {
		limit = 10
	}
	limit = min(limit, maxSearchLimit)
	// The token: "r" and the position to continue below (recent); or "o",
	// the number of hits already scanned, and the position the hits
	// considered are below (rank).
	var below, offset int64 = -1, 0
	if req.NextBatch != "" {
		var ok bool
		switch {
		case order == "recent" && req.NextBatch[0] == 'r':
			below, ok = parseTokenInt(req.NextBatch[1:])
		case order == "rank" && req.NextBatch[0] == 'o':
			if o, b, found := strings.Cut(req.NextBatch[1:], "."); found {
				var ok1, ok2 bool
				offset, ok1 = parseTokenInt(o)
				below, ok2 = parseTokenInt(b)
				ok = ok1 && ok2
			}
		}
		if !ok {
			return nil, merr.InvalidParam("Invalid next_batch token (a search token must come from a search with the same order_by)")
		}
	}
	resp := &SearchResponse{}
	out := &resp.SearchCategories.RoomEvents
	words := searchWords(req.Term)
	out.Highlights = append([]string{}, words...)
	out.Results = []SearchResult{}
	if len(words) == 0 {
		return resp, nil
	}
	s.CatchUp(ctx)
	// Find what was committed before the call.
	if err := s.rooms.FlushSearchIndex(ctx); err != nil {
		return nil, err
	}
	rooms, err := s.searchRooms(ctx, req)
	if err != nil {
		return nil, err
	}
	if len(rooms) == 0 {
		return resp, nil
	}
	if below < 0 {
		below = s.n.Current().Events + 1
	}
	// Pages of order_by rank rank the same hits: those below the first
	// page's position (recent moves below along as it pages).
	origBelow := below
	d := s.db.Dialect()
	stmts := searchStatements(d)
	query := searchQuery(d, words)
	if err := s.db.QueryRow(ctx, stmts.count, query, rooms, keys, searchCountCap).Scan(&out.Count); err != nil {
		return nil, fmt.Errorf("count search hits: %w", err)
	}
	// Words with fewer hits than the count's cap take the plans for few hits.
	few := out.Count < searchCountCap
	vis := map[string]*visibility{}
	var hits []hit
	batch := max(2*limit, 20)
	next := ""
	for round := 0; round < searchRounds && len(hits) < limit; round++ {
		var q string
		var args []any
		switch {
		case order == "recent" && few:
			q, args = stmts.recentFew, []any{query, rooms, keys, below, batch}
		case order == "recent":
			q, args = stmts.recent, []any{query, rooms, keys, below, batch}
		case few:
			q, args = stmts.rankFew, []any{query, rooms, keys, below, rankWindow, batch, offset}
		default:
			q, args = stmts.rank, []any{query, rooms, keys, below, rankWindow, batch, offset}
		}
		rows, err := s.db.Query(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("search: %w", err)
		}
		var positions []int64
		ranks := map[int64]float64{}
		for rows.Next() {
			var pos int64
			var rank float64
			if err := rows.Scan(&pos, &rank); err != nil {
				rows.Close()
				return nil, err
			}
			positions = append(positions, pos)
			ranks[pos] = rank
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return nil, fmt.Errorf("search: %w", err)
		}
		rows.Close()
		evs, err := s.eventsByPos(ctx, positions)
		if err != nil {
			return nil, err
		}
		var need []string
		for _, ce := range evs {
			if vis[ce.roomID] == nil && !slices.Contains(need, ce.roomID) {
				need = append(need, ce.roomID)
			}
		}
		if err := loadVisibilities(ctx, s.db, need, req.UserID, vis); err != nil {
			return nil, err
		}
		for _, pos := range positions {
			if order == "recent" {
				below = pos
			} else {
				offset++
			}
			ce := evs[pos]
			if ce == nil || ce.redacted != "" {
				continue
			}
			v := vis[ce.roomID]
			if !v.canSee(ce.pos, ce.sender, ce.typ, ce.stateKey) || req.Match != nil && !req.Match(ce.typ, ce.sender, ce.hasURL) {
				continue
			}
			hits = append(hits, hit{ev: ce, rank: ranks[pos]})
			if len(hits) == limit {
				// A full page always has a next_batch, as Synapse's does
				// (and Complement's back-pagination test asks): the page
				// after the last hit is empty and has none.
				next = "more"
				break
			}
		}
		if len(positions) < batch {
			break // the index has no more hits
		}
		if len(hits) < limit && round == searchRounds-1 {
			next = "more" // the user may page on through invisible hits
		}
	}
	if next != "" {
		if order == "recent" {
			out.NextBatch = "r" + strconv.FormatInt(below, 10)
		} else {
			out.NextBatch = fmt.Sprintf("o%d.%d", offset, origBelow)
		}
	}
	now := nowMS()
	list := make([]*clientEvent, len(hits))
	for i, h := range hits {
		list[i] = h.ev
	}
	rendered, err := s.appendTimeline(ctx, nil, list, now, req.UserID, req.DeviceID, false)
	if err != nil {
		return nil, err
	}
	var contexts []*SearchEventsCtx
	if req.Context != nil && len(hits) > 0 {
		if contexts, err = s.searchContexts(ctx, req, hits, vis, now); err != nil {
			return nil, err
		}
	}
	for i, h := range hits {
		r := SearchResult{Rank: h.rank, Result: rendered[i]}
		if contexts != nil {
			r.Context = contexts[i]
		}
		out.Results = append(out.Results, r)
	}
	if len(req.GroupBy) > 0 {
		out.Groups = groupHits(hits, req.GroupBy, out.NextBatch)
	}
	if req.IncludeState {
		out.State = map[string][]json.RawMessage{}
		for _, h := range hits {
			if _, done := out.State[h.ev.roomID]; done {
				continue
			}
			st, _, err := s.RoomState(ctx, req.UserID, h.ev.roomID)
			if err != nil {
				return nil, err
			}
			out.State[h.ev.roomID] = st
		}
	}
	logging.From(ctx).WithField("user_id", req.UserID).WithField("rooms", len(rooms)).WithField("hits", len(hits)).Debug("search")
	return resp, nil
}

// loadMemberships reads the user's membership history (ascending) in
// each of the rooms, in one query.
func loadMemberships(ctx context.Context, q storage.Querier, rooms []string, userID string) (map[string][]change, error) {
	out := make(map[string][]change, len(rooms))
	rows, err := q.Query(ctx, `SELECT room_id, pos, COALESCE(membership, '') FROM events WHERE room_id IN ($1) AND type = 'm.room.member' AND state_key = $2 ORDER BY pos`, rooms, userID)
	if err != nil {
		return nil, fmt.Errorf("membership history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room string
		var c change
		if err := rows.Scan(&room, &c.pos, &c.value); err != nil {
			return nil, err
		}
		out[room] = append(out[room], c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("membership history: %w", err)
	}
	return out, nil
}

// loadVisibilities is loadVisibility for several rooms at once (two
// queries for all of them), adding them to vis.
func loadVisibilities(ctx context.Context, q storage.Querier, rooms []string, userID string, vis map[string]*visibility) error {
	if len(rooms) == 0 {
		return nil
	}
	hist, err := loadMemberships(ctx, q, rooms, userID)
	if err != nil {
		return err
	}
	for _, r := range rooms {
		v := &visibility{user: userID, membership: hist[r]}
		if n := len(v.membership); n > 0 {
			v.current = v.membership[n-1].value
		}
		vis[r] = v
	}
	rows, err := q.Query(ctx, `SELECT room_id, pos, json FROM events WHERE room_id IN ($1) AND type = 'm.room.history_visibility' AND state_key = '' ORDER BY pos`, rooms)
	if err != nil {
		return fmt.Errorf("history visibility: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room, js string
		var pos int64
		if err := rows.Scan(&room, &pos, &js); err != nil {
			return err
		}
		vis[room].histVis = append(vis[room].histVis, change{pos: pos, value: historyVisibility(js)})
	}
	return rows.Err()
}

// parseTokenInt reads a non-negative number of a search token.
func parseTokenInt(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0
}

// searchRooms lists the rooms the user is or was in (and did not forget),
// narrowed by the filter.
func (s *Service) searchRooms(ctx context.Context, req SearchRequest) ([]string, error) {
	var allow map[string]bool
	if req.Rooms != nil {
		allow = make(map[string]bool, len(*req.Rooms))
		for _, r := range *req.Rooms {
			allow[r] = true
		}
	}
	deny := make(map[string]bool, len(req.NotRooms))
	for _, r := range req.NotRooms {
		deny[r] = true
	}
	var out []string
	for _, rv := range s.n.View(req.UserID).Rooms {
		if allow != nil && !allow[rv.ID] || deny[rv.ID] {
			continue
		}
		if rv.Mem.State == "leave" || rv.Mem.State == "ban" {
			// A room the user forgot is no longer theirs to read.
			forgotten, err := s.rooms.Forgotten(ctx, req.UserID, rv.ID)
			if err != nil {
				return nil, err
			}
			if forgotten {
				continue
			}
		}
		out = append(out, rv.ID)
	}
	return out, nil
}

// eventsByPos loads and renders events by position.
func (s *Service) eventsByPos(ctx context.Context, positions []int64) (map[int64]*clientEvent, error) {
	out := make(map[int64]*clientEvent, len(positions))
	if len(positions) == 0 {
		return out, nil
	}
	evs, err := s.queryEvents(ctx, "events by position", `SELECT `+roomserver.EventColumns+` FROM events WHERE pos IN ($1)`, positions)
	if err != nil {
		return nil, err
	}
	for _, ce := range evs {
		out[ce.pos] = ce
	}
	return out, nil
}

// scanPrefixed scans a row whose first column is a number before the event columns.
type scanPrefixed struct {
	rows *sql.Rows
	k    *int
}

func (p scanPrefixed) Scan(dest ...any) error {
	return p.rows.Scan(append([]any{p.k}, dest...)...)
}

// searchContexts loads the events around every hit that the user may see,
// in one query for all of them, and the senders' profiles at the time if
// asked.
func (s *Service) searchContexts(ctx context.Context, req SearchRequest, hits []hit, vis map[string]*visibility, now int64) ([]*SearchEventsCtx, error) {
	c := req.Context
	nb, na := min(max(c.Before, 0), maxSearchContext), min(max(c.After, 0), maxSearchContext)
	before := make([][]*clientEvent, len(hits))
	after := make([][]*clientEvent, len(hits))
	if nb > 0 || na > 0 {
		ceiling := s.n.Current().Events
		var parts []string
		var args []any
		arg := func(v any) string {
			args = append(args, v)
			return "$" + strconv.Itoa(len(args))
		}
		for i, h := range hits {
			if nb > 0 {
				parts = append(parts, fmt.Sprintf(`SELECT * FROM (SELECT %d AS k, %s FROM events WHERE room_id = %s AND pos < %s ORDER BY pos DESC LIMIT %d) b%d`,
					2*i, roomserver.EventColumns, arg(h.ev.roomID), arg(h.ev.pos), nb, i))
			}
			if na > 0 {
				parts = append(parts, fmt.Sprintf(`SELECT * FROM (SELECT %d AS k, %s FROM events WHERE room_id = %s AND pos > %s AND pos <= %s ORDER BY pos ASC LIMIT %d) a%d`,
					2*i+1, roomserver.EventColumns, arg(h.ev.roomID), arg(h.ev.pos), arg(ceiling), na, i))
			}
		}
		rows, err := s.db.Query(ctx, strings.Join(parts, " UNION ALL "), args...)
		if err != nil {
			return nil, fmt.Errorf("search context: %w", err)
		}
		defer rows.Close()
		var k int
		for rows.Next() {
			e, err := roomserver.ScanEvent(scanPrefixed{rows: rows, k: &k})
			if err != nil {
				return nil, err
			}
			x, err := s.renderCached(&e)
			if err != nil {
				return nil, err
			}
			i := k / 2
			if i < 0 || i >= len(hits) || !vis[x.roomID].canSee(x.pos, x.sender, x.typ, x.stateKey) {
				continue
			}
			if k%2 == 0 {
				before[i] = append(before[i], x)
			} else {
				after[i] = append(after[i], x)
			}
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("search context: %w", err)
		}
		rows.Close()
	}
	// One aggregation lookup for all the context events (it warms the
	// cache the rendering below reads).
	var all []*clientEvent
	for i := range hits {
		all = append(append(all, before[i]...), after[i]...)
	}
	if _, err := s.aggregates(ctx, all); err != nil {
		return nil, err
	}
	out := make([]*SearchEventsCtx, len(hits))
	for i, h := range hits {
		// Each list in its order: before newest first, after oldest first.
		sort.Slice(before[i], func(a, b int) bool { return before[i][a].pos > before[i][b].pos })
		sort.Slice(after[i], func(a, b int) bool { return after[i][a].pos < after[i][b].pos })
		sc := &SearchEventsCtx{EventsBefore: []json.RawMessage{}, EventsAfter: []json.RawMessage{}}
		var err error
		if sc.EventsBefore, err = s.appendTimeline(ctx, sc.EventsBefore, before[i], now, req.UserID, req.DeviceID, false); err != nil {
			return nil, err
		}
		if sc.EventsAfter, err = s.appendTimeline(ctx, sc.EventsAfter, after[i], now, req.UserID, req.DeviceID, false); err != nil {
			return nil, err
		}
		start, end := h.ev.pos-1, h.ev.pos
		if len(before[i]) > 0 {
			start = before[i][len(before[i])-1].pos - 1
		}
		if len(after[i]) > 0 {
			end = after[i][len(after[i])-1].pos
		}
		sc.Start, sc.End = pageToken(start), pageToken(end)
		if c.IncludeProfile {
			senders := map[string]bool{h.ev.sender: true}
			for _, e := range before[i] {
				senders[e.sender] = true
			}
			for _, e := range after[i] {
				senders[e.sender] = true
			}
			if sc.ProfileInfo, err = s.profilesAt(ctx, h.ev, senders); err != nil {
				return nil, err
			}
		}
		out[i] = sc
	}
	return out, nil
}

// profilesAt returns the display names and avatars of users as their
// membership events had them just before an event.
func (s *Service) profilesAt(ctx context.Context, ce *clientEvent, users map[string]bool) (map[string]SearchProfile, error) {
	state, err := s.rooms.StateIDsAtSnapshot(ctx, ce.snapshot)
	if err != nil {
		return nil, err
	}
	var ids []string
	for u := range users {
		if id, ok := state[[2]string{"m.room.member", u}]; ok {
			ids = append(ids, id)
		}
	}
	evs, err := s.eventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]SearchProfile, len(evs))
	for _, e := range evs {
		if e.stateKey == nil {
			continue
		}
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(e.content, &c)
		out[*e.stateKey] = SearchProfile{DisplayName: c.DisplayName, AvatarURL: c.AvatarURL}
	}
	return out, nil
}

// groupHits groups the hits of a page by room or sender, in the order the
// groups first appear.
func groupHits(hits []hit, groupBy []string, next string) map[string]map[string]*SearchGroup {
	out := map[string]map[string]*SearchGroup{}
	for _, g := range groupBy {
		groups := map[string]*SearchGroup{}
		for _, h := range hits {
			key := h.ev.roomID
			if g == "sender" {
				key = h.ev.sender
			}
			gr := groups[key]
			if gr == nil {
				gr = &SearchGroup{Results: []string{}, Order: len(groups) + 1, NextBatch: next}
				groups[key] = gr
			}
			gr.Results = append(gr.Results, h.ev.eventID)
		}
		out[g] = groups
	}
	return out
}
