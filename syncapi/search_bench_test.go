package syncapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/syncapi"
)

// searchVocabulary is a vocabulary of pseudo-words whose frequencies fall
// off like a natural language's (word i is drawn with weight 1/(i+1)).
func searchVocabulary(n int) []string {
	r := rand.New(rand.NewSource(1))
	out := make([]string, n)
	const letters = "abcdefghijklmnopqrstuvwxyz"
	for i := range out {
		var b strings.Builder
		for j := 0; j < 4+r.Intn(6); j++ {
			b.WriteByte(letters[r.Intn(len(letters))])
		}
		out[i] = fmt.Sprintf("%s%d", b.String(), i)
	}
	return out
}

// fillMessages stores n messages in rooms directly (the roomserver's rows
// and the search index), much faster than sending them one by one.
func fillMessages(tb testing.TB, db *storage.DB, rooms []string, sender string, n int, vocab []string) {
	tb.Helper()
	ctx := context.Background()
	var pos, snap int64
	if err := db.QueryRow(ctx, `SELECT COALESCE(MAX(pos), 0) FROM events`).Scan(&pos); err != nil {
		tb.Fatal(err)
	}
	snaps := map[string]int64{}
	for _, r := range rooms {
		if err := db.QueryRow(ctx, `SELECT snapshot_id FROM rooms WHERE room_id = $1`, r).Scan(&snap); err != nil {
			tb.Fatal(err)
		}
		snaps[r] = snap
	}
	weights := make([]float64, len(vocab))
	total := 0.0
	for i := range vocab {
		total += 1 / float64(i+1)
		weights[i] = total
	}
	rnd := rand.New(rand.NewSource(2))
	word := func() string {
		x := rnd.Float64() * total
		return vocab[sort.SearchFloat64s(weights, x)]
	}
	const batch = 200
	ts := time.Now().UnixMilli() - int64(n)
	for done := 0; done < n; done += batch {
		var evRows, ixRows []string
		var evArgs, ixArgs []any
		for i := done; i < min(done+batch, n); i++ {
			pos++
			room := rooms[i%len(rooms)]
			words := make([]string, 8)
			for j := range words {
				words[j] = word()
			}
			body := strings.Join(words, " ")
			id := fmt.Sprintf("$bench%d", pos)
			js, _ := json.Marshal(map[string]any{"content": map[string]any{"msgtype": "m.text", "body": body}, "event_id": id,
				"origin_server_ts": ts + int64(i), "room_id": room, "sender": sender, "type": "m.room.message", "depth": pos})
			k := len(evArgs)
			evRows = append(evRows, fmt.Sprintf("($%d,$%d,$%d,'m.room.message',$%d,$%d,$%d,$%d,$%d)", k+1, k+2, k+3, k+4, k+5, k+6, k+7, k+8))
			evArgs = append(evArgs, pos, id, room, sender, pos, ts+int64(i), snaps[room], string(js))
			k = len(ixArgs)
			ixRows = append(ixRows, fmt.Sprintf("($%d,$%d,'content.body',$%d)", k+1, k+2, k+3))
			ixArgs = append(ixArgs, pos, room, body)
		}
		err := db.Write(ctx, func(tx *storage.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO events (pos, event_id, room_id, type, sender, depth, origin_ts, snapshot_id, json) VALUES `+strings.Join(evRows, ","), evArgs...); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO event_search (rowid, room_id, field, body) VALUES `+strings.Join(ixRows, ","), ixArgs...); err != nil {
				return err
			}
			// Indexed here: the search indexer goes on after them.
			_, err := tx.Exec(ctx, `UPDATE search_position SET pos = $1 WHERE id = 0 AND pos < $1`, pos)
			return err
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	if db.Dialect() == storage.Postgres {
		if _, err := db.Exec(ctx, `ANALYZE`); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkSearch100k measures /search over 100,000 messages in 10 rooms
// (8 words each from a vocabulary of 2,000 with natural-language-like
// frequencies): a very common word, a common one, a rare one and two words,
// ordered by rank and by recent, 10 results with one event of context
// each; it reports the p50 and p99 of 200 searches per case.
//
//	go test ./syncapi -run '^$' -bench BenchmarkSearch100k -benchtime 1x
func BenchmarkSearch100k(b *testing.B) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		b.Run(d.String(), func(b *testing.B) {
			ctx := context.Background()
			db := storagetest.Open(b, d)
			start := func() *world {
				w, _ := worldOn(b, db, false)
				return w
			}
			w := start()
			var rooms []string
			for i := 0; i < 10; i++ {
				rooms = append(rooms, w.room(b, "@alice:test", "@bob:test"))
			}
			w.settle()
			vocab := searchVocabulary(2000)
			t0 := time.Now()
			fillMessages(b, db, rooms, "@alice:test", 100000, vocab)
			b.Logf("filled 100,000 messages in %v", time.Since(t0).Round(time.Millisecond))
			// A fresh sync engine that knows the stored positions.
			w = start()
			for _, c := range []struct{ name, term, order string }{
				{"very-common-rank", vocab[0], "rank"}, // in about 65% of the messages
				{"very-common-recent", vocab[0], "recent"},
				{"common-rank", vocab[10], "rank"}, // about 8.5%
				{"common-recent", vocab[10], "recent"},
				{"rare-rank", vocab[1500], "rank"}, // about 65 messages
				{"rare-recent", vocab[1500], "recent"},
				{"two-words-recent", vocab[1] + " " + vocab[2], "recent"},
			} {
				b.Run(c.name, func(b *testing.B) {
					req := syncapi.SearchRequest{UserID: "@bob:test", Term: c.term, OrderBy: c.order, Limit: 10,
						Context: &syncapi.SearchContext{Before: 1, After: 1}}
					var lat []time.Duration
					hits := 0
					for i := 0; i < 200; i++ {
						t1 := time.Now()
						resp, err := w.sync.Search(ctx, req)
						if err != nil {
							b.Fatal(err)
						}
						lat = append(lat, time.Since(t1))
						hits = resp.SearchCategories.RoomEvents.Count
					}
					sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if _, err := w.sync.Search(ctx, req); err != nil {
							b.Fatal(err)
						}
					}
					// After ResetTimer, which drops reported metrics.
					b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
					b.ReportMetric(float64(hits), "count")
				})
			}
		})
	}
}
