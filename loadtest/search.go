package loadtest

// The search scenario: the members of the first load room send --messages
// messages into it (PUT /send on --concurrency workers), then the room's
// creator runs POST /search on --workers workers for --duration, taking
// four cases in turn: a rare term (in 0.1% of the messages) and a common
// one (in 10%), each ordered by recent and by rank, with the filter and
// event context Element sends. Each message has eight words of a
// 2,000-word vocabulary drawn with Zipf-like frequencies, so the index
// holds more than the two terms.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"
)

// Which messages carry the measured terms.
const (
	ltRareEvery   = 1000 // 0.1%
	ltCommonEvery = 10   // 10%
)

type ltSearchCase struct {
	Name     string `json:"name"`
	Term     string `json:"term"`
	OrderBy  string `json:"order_by"`
	Expected int    `json:"messages_with_term"`
	// From the first answer of the window: the server's count and the results in the page.
	Count    int        `json:"count"`
	Results  int        `json:"results"`
	Requests ltOpReport `json:"requests"`
}

type ltSearchReport struct {
	Room          string         `json:"room"`
	Searcher      string         `json:"searcher"`
	Messages      int            `json:"messages_sent"`
	FillFailed    int            `json:"fill_failed"`
	FillErrors    map[string]int `json:"fill_errors,omitempty"`
	FillSeconds   float64        `json:"fill_seconds"`
	FillRate      float64        `json:"fill_msgs_per_s"`
	FillLatency   ltSummary      `json:"fill_send_latency"`
	Workers       int            `json:"workers"`
	WindowSeconds float64        `json:"window_seconds"`
	Cases         []ltSearchCase `json:"cases"`
}

var ltSyllables = []string{"ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "va", "ze", "bo", "du", "fi", "ge", "hu", "ji", "ko", "le", "mo", "ni"}

// vocabWord is word i of the fill's vocabulary: three syllables.
func vocabWord(i int) string {
	n := len(ltSyllables)
	return ltSyllables[i%n] + ltSyllables[(i/n)%n] + ltSyllables[(i/(n*n))%n]
}

// letterTag turns the run ID into letters only, so that every tokenizer
// keeps a term made of it as one word.
func letterTag(runID string) string {
	b := []byte(runID)
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9':
			b[i] = 'g' + (c - '0')
		case c >= 'a' && c <= 'f':
			b[i] = 'q' + (c - 'a')
		default:
			b[i] = 'x'
		}
	}
	return string(b)
}

// searchTerms are the run's rare and common terms.
func searchTerms(runID string) (rare, common string) {
	tag := letterTag(runID)
	return "zrare" + tag, "zcommon" + tag
}

// fillBody is the body of fill message seq: eight vocabulary words (word i
// with weight about 1/(i+1)), plus the rare and common terms when due.
func fillBody(runID string, seq int) string {
	r := rand.New(rand.NewPCG(uint64(seq), 0x5eed))
	words := make([]string, 0, 10)
	for k := 0; k < 8; k++ {
		i := int(math.Exp(r.Float64()*math.Log(2001))) - 1
		words = append(words, vocabWord(min(max(i, 0), 1999)))
	}
	rare, common := searchTerms(runID)
	if seq%ltRareEvery == 7 {
		words = append(words, rare)
	}
	if seq%ltCommonEvery == 3 {
		words = append(words, common)
	}
	return strings.Join(words, " ")
}

// termCount is how many of n fill messages carry the term due every every-th message at offset off.
func termCount(n, every, off int) int {
	if n <= off {
		return 0
	}
	return (n-off-1)/every + 1
}

// searchBody is a /search body as Element sends it, for one room.
func searchBody(term, orderBy, roomID string) map[string]any {
	return map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
		"search_term": term, "order_by": orderBy,
		"filter":        map[string]any{"limit": 10, "rooms": []string{roomID}},
		"event_context": map[string]any{"before_limit": 1, "after_limit": 1, "include_profile": true},
	}}}
}

// ltSearchAnswer is the part of a /search answer the load test reads.
type ltSearchAnswer struct {
	SearchCategories struct {
		RoomEvents struct {
			Count   int   `json:"count"`
			Results []any `json:"results"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

// fill sends the messages into room from its members in turn.
func (e *ltEnv) fill(ctx context.Context, users []*ltUser, room *ltRoom, sr *ltSearchReport) error {
	st := newOpStats()
	var done atomic.Int64
	start := time.Now()
	err := forEach(ctx, e.opts.Messages, e.opts.Concurrency, func(ctx context.Context, i int) error {
		u := users[room.Members[i%len(room.Members)]]
		content := map[string]any{"msgtype": "m.text", "body": fillBody(e.runID, i)}
		txn := fmt.Sprintf("lt-fill-%s-%d", e.runID, i)
		t := time.Now()
		err := withRetry(ctx, func(ctx context.Context) error { return e.c.send(ctx, u.AccessToken, room.ID, txn, content) })
		if ctx.Err() != nil {
			return ctx.Err()
		}
		st.record(time.Since(t), err)
		if n := done.Add(1); n%10000 == 0 {
			e.logf("  %d/%d messages sent (%.0f msg/s)", n, e.opts.Messages, float64(n)/time.Since(start).Seconds())
		}
		return nil
	})
	sr.FillSeconds = time.Since(start).Seconds()
	r := opReport(st, sr.FillSeconds)
	sr.Messages, sr.FillFailed, sr.FillErrors, sr.FillLatency, sr.FillRate = r.OK, r.Failed, r.Errors, r.Latency, r.PerSecond
	return err
}

func (e *ltEnv) searchScenario(ctx context.Context, users []*ltUser, rooms []*ltRoom, rep *Report) error {
	room := rooms[0]
	searcher := users[room.Members[0]]
	sr := &ltSearchReport{Room: room.ID, Searcher: searcher.UserID, Workers: e.opts.Workers}
	rep.Search = sr
	e.logf("filling %s with %d messages from its %d members on %d workers", room.ID, e.opts.Messages, len(room.Members), e.opts.Concurrency)
	if err := e.fill(ctx, users, room, sr); err != nil {
		e.noteErrors(rep, err)
		return fmt.Errorf("fill: %w", err)
	}
	e.logf("fill: %d sent in %.1f s (%.0f msg/s), %d failed", sr.Messages, sr.FillSeconds, sr.FillRate, sr.FillFailed)
	if sr.FillFailed > 0 {
		rep.note("%d fill messages failed (%s): the expected term counts are upper bounds", sr.FillFailed, fmtCounts(sr.FillErrors))
	}
	rare, common := searchTerms(e.runID)
	n := e.opts.Messages
	sr.Cases = []ltSearchCase{
		{Name: "rare term, recent", Term: rare, OrderBy: "recent", Expected: termCount(n, ltRareEvery, 7)},
		{Name: "rare term, rank", Term: rare, OrderBy: "rank", Expected: termCount(n, ltRareEvery, 7)},
		{Name: "common term, recent", Term: common, OrderBy: "recent", Expected: termCount(n, ltCommonEvery, 3)},
		{Name: "common term, rank", Term: common, OrderBy: "rank", Expected: termCount(n, ltCommonEvery, 3)},
	}
	bodies := make([]map[string]any, len(sr.Cases))
	for i, c := range sr.Cases {
		bodies[i] = searchBody(c.Term, c.OrderBy, room.ID)
	}
	search := func(ctx context.Context, i int, st *ltSendStats, first *atomic.Bool) {
		var ans ltSearchAnswer
		start := time.Now()
		_, err := e.c.do(ctx, "search", "POST", "/_matrix/client/v3/search", searcher.AccessToken, bodies[i], &ans)
		lat := time.Since(start)
		if ctx.Err() != nil {
			return
		}
		st.record(lat, err)
		if err == nil && first.CompareAndSwap(false, true) {
			sr.Cases[i].Count, sr.Cases[i].Results = ans.SearchCategories.RoomEvents.Count, len(ans.SearchCategories.RoomEvents.Results)
		}
	}
	if e.opts.Warmup > 0 {
		e.logf("warm-up %s", e.opts.Warmup)
		firsts := make([]atomic.Bool, len(bodies))
		closedLoop(ctx, e.opts.Workers, e.opts.Warmup, func(ctx context.Context, _ int, seq int64) bool {
			i := int(seq % int64(len(bodies)))
			search(ctx, i, newOpStats(), &firsts[i])
			return true
		})
	}
	stats := make([]*ltSendStats, len(bodies))
	for i := range stats {
		stats[i] = newOpStats()
	}
	firsts := make([]atomic.Bool, len(bodies))
	e.logf("searching on %d worker(s) for %s", e.opts.Workers, e.opts.Duration)
	sr.WindowSeconds = e.measured(ctx, rep, func(ctx context.Context) ltWork {
		var ops atomic.Int64
		closedLoop(ctx, e.opts.Workers, e.opts.Duration, func(ctx context.Context, _ int, seq int64) bool {
			i := int(seq % int64(len(bodies)))
			search(ctx, i, stats[i], &firsts[i])
			ops.Add(1)
			return true
		})
		return ltWork{Ops: int(ops.Load()), Unit: "search"}
	})
	for i := range sr.Cases {
		sr.Cases[i].Requests = opReport(stats[i], sr.WindowSeconds)
		if c := sr.Cases[i]; c.Results == 0 && c.Requests.OK > 0 && c.Expected > 0 {
			rep.note("search %q (%s) found nothing though %d messages hold the term", c.Term, c.OrderBy, c.Expected)
		}
	}
	return ctx.Err()
}

func writeSearch(p func(string, ...any), s *ltSearchReport) {
	p("Search in %s (searcher %s)", s.Room, s.Searcher)
	p("  fill: %d messages sent in %.1f s (%.0f msg/s), %d failed; send %s", s.Messages, s.FillSeconds, s.FillRate, s.FillFailed, fmtSummary(s.FillLatency))
	if len(s.FillErrors) > 0 {
		p("  fill errors: %s", fmtCounts(s.FillErrors))
	}
	p("  %d worker(s), measured window %.1f s", s.Workers, s.WindowSeconds)
	for _, c := range s.Cases {
		p("  %-20s %q in %d messages; count %d, %d results in the page", c.Name, c.Term, c.Expected, c.Count, c.Results)
		p("    %s", fmtOp(c.Requests))
	}
}
