package syncapi

import (
	"strings"
	"unicode"

	"github.com/haven-chat/haven/storage"
)

// The full-text queries of /search: the one place where the SQL text
// differs between the engines (see storage/migrations/0005_search.sql).
// Parameters: $1 the engine's query (searchQuery), $2 the rooms, $3 the
// fields, $4 the position to search below; then
//   - recent: $5 the limit;
//   - rank: $5 the window (how many of the newest hits are ranked), $6 the
//     limit, $7 the offset;
//   - count: $4 the cap.
//
// Each search row is the event's position and its rank (higher is better).
//
// The *Few variants are for words with few hits (fewer than the count's
// cap): on PostgreSQL their ORDER BY cannot use the primary key, so the
// planner reads the few hits from the GIN index instead of walking the
// table backwards looking for them — whatever plan it caches for the
// prepared statement. The others walk the primary key backwards, which
// finds the newest hits of a frequent word after a few thousand rows.
type searchSQL struct {
	recent, recentFew, rank, rankFew, count string
}

var searchPostgres = searchSQL{
	recent:    `SELECT rowid, 0::float8 FROM event_search WHERE vec @@ to_tsquery('simple', $1) AND room_id IN ($2) AND field IN ($3) AND rowid < $4 ORDER BY rowid DESC LIMIT $5`,
	recentFew: `SELECT rowid, 0::float8 FROM event_search WHERE vec @@ to_tsquery('simple', $1) AND room_id IN ($2) AND field IN ($3) AND rowid < $4 ORDER BY rowid + 0 DESC LIMIT $5`,
	rank: `SELECT rowid, ts_rank_cd(vec, to_tsquery('simple', $1)) AS r FROM (SELECT rowid, vec FROM event_search WHERE vec @@ to_tsquery('simple', $1)
AND room_id IN ($2) AND field IN ($3) AND rowid < $4 ORDER BY rowid DESC LIMIT $5) w ORDER BY r DESC, rowid DESC LIMIT $6 OFFSET $7`,
	rankFew: `SELECT rowid, ts_rank_cd(vec, to_tsquery('simple', $1)) AS r FROM (SELECT rowid, vec FROM event_search WHERE vec @@ to_tsquery('simple', $1)
AND room_id IN ($2) AND field IN ($3) AND rowid < $4 ORDER BY rowid + 0 DESC LIMIT $5) w ORDER BY r DESC, rowid DESC LIMIT $6 OFFSET $7`,
	count: `SELECT COUNT(*) FROM (SELECT 1 FROM event_search WHERE vec @@ to_tsquery('simple', $1) AND room_id IN ($2) AND field IN ($3) LIMIT $4) c`,
}

var searchSQLite = searchSQL{
	recent:    `SELECT rowid, 0.0 FROM event_search WHERE event_search MATCH $1 AND room_id IN ($2) AND field IN ($3) AND rowid < $4 ORDER BY rowid DESC LIMIT $5`,
	recentFew: `SELECT rowid, 0.0 FROM event_search WHERE event_search MATCH $1 AND room_id IN ($2) AND field IN ($3) AND rowid < $4 ORDER BY rowid DESC LIMIT $5`,
	rank: `SELECT rowid, r FROM (SELECT rowid, -bm25(event_search) AS r FROM event_search WHERE event_search MATCH $1
AND room_id IN ($2) AND field IN ($3) AND rowid < $4 ORDER BY rowid DESC LIMIT $5) ORDER BY r DESC, rowid DESC LIMIT $6 OFFSET $7`,
	rankFew: `SELECT rowid, r FROM (SELECT rowid, -bm25(event_search) AS r FROM event_search WHERE event_search MATCH $1
AND room_id IN ($2) AND field IN ($3) AND rowid < $4 ORDER BY rowid DESC LIMIT $5) ORDER BY r DESC, rowid DESC LIMIT $6 OFFSET $7`,
	count: `SELECT COUNT(*) FROM (SELECT 1 FROM event_search WHERE event_search MATCH $1 AND room_id IN ($2) AND field IN ($3) LIMIT $4) c`,
}

func searchStatements(d storage.Dialect) searchSQL {
	if d == storage.Postgres {
		return searchPostgres
	}
	return searchSQLite
}

// maxSearchWords bounds the words of a search term.
const maxSearchWords = 16

// searchWords splits a search term into lower-cased words of letters and
// digits; everything else separates words. Only such words reach the
// engines' query languages, so no user text is ever parsed as an operator.
func searchWords(term string) []string {
	var out []string
	seen := map[string]bool{}
	for _, w := range strings.FieldsFunc(strings.ToLower(term), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	}) {
		if seen[w] {
			continue
		}
		seen[w] = true
		out = append(out, w)
		if len(out) == maxSearchWords {
			break
		}
	}
	return out
}

// searchQuery is the engine's query for words: every word must occur, as a
// word or the start of one.
func searchQuery(d storage.Dialect, words []string) string {
	parts := make([]string, len(words))
	for i, w := range words {
		if d == storage.Postgres {
			parts[i] = w + ":*"
		} else {
			parts[i] = `"` + w + `"*`
		}
	}
	if d == storage.Postgres {
		return strings.Join(parts, " & ")
	}
	return strings.Join(parts, " ")
}
