package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/haven-chat/haven/internal/merr"
)

// UserDirectoryResult is one user found by /user_directory/search.
type UserDirectoryResult struct {
	UserID      string  `json:"user_id"`
	DisplayName *string `json:"display_name,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// UserDirectoryResponse is the answer of /user_directory/search.
type UserDirectoryResponse struct {
	Limited bool                  `json:"limited"`
	Results []UserDirectoryResult `json:"results"`
}

const (
	maxDirectoryLimit = 100
	// directoryScan bounds the candidate rows one search reads.
	directoryScan = 2000
	// maxDirectoryText bounds a display name or avatar URL taken from a
	// member event.
	maxDirectoryText = 1024
)

// UserDirectory finds users who share a room with the searcher or are
// joined to a public room (published in the directory, or with the
// public join rule), whose user ID localpart or display name (any word of
// it) starts with every word of the term. Two queries, each narrowed by
// the first word in SQL: the joined members of those rooms (roomserver's
// room_state) with a profile here (userapi's profiles: this server's
// users), and those without one (other servers' users), with the display
// name and avatar of their member events.
func (s *Service) UserDirectory(ctx context.Context, userID, term string, limit int) (*UserDirectoryResponse, error) {
	if limit <= 0 {
		limit = 10
	}
	limit = min(limit, maxDirectoryLimit)
	resp := &UserDirectoryResponse{Results: []UserDirectoryResult{}}
	words := strings.Fields(strings.ToLower(term))
	if len(words) == 0 {
		return resp, nil
	}
	if len(words) > maxSearchWords {
		return nil, merr.InvalidParam("The search term has too many words")
	}
	s.CatchUp(ctx)
	var joined []string
	for _, rv := range s.n.View(userID).Rooms {
		if rv.Mem.State == "join" {
			joined = append(joined, rv.ID)
		}
	}
	// The SQL narrows the candidates by one word's start. SQLite's LOWER and
	// LIKE fold ASCII letters only, so only the ASCII start of a word can be
	// compared there (the longest one of the words); directoryMatch then
	// checks every word, case-insensitively in full, on both databases.
	first := ""
	for _, w := range words {
		if p := asciiPrefix(w); len(p) > len(first) {
			first = p
		}
	}
	first = likeEscape(first)
	// Users with a profile here (this server's users) are found by it;
	// the others (other servers' users) by their member events.
	rows, err := s.db.Query(ctx, `SELECT DISTINCT m.state_key, p.displayname, p.avatar_url FROM room_state m JOIN profiles p ON p.user_id = m.state_key
WHERE m.type = 'm.room.member' AND m.membership = 'join' AND `+directoryRooms+`
AND (LOWER(m.state_key) LIKE $3 ESCAPE '\' OR LOWER(p.displayname) LIKE $4 ESCAPE '\' OR LOWER(p.displayname) LIKE $5 ESCAPE '\')
LIMIT $6`, joined, true, "@"+first+"%", first+"%", "% "+first+"%", directoryScan)
	if err != nil {
		return nil, fmt.Errorf("user directory: %w", err)
	}
	var found []UserDirectoryResult
	scanned := 0
	for rows.Next() {
		scanned++
		var r UserDirectoryResult
		var name, avatar *string
		if err := rows.Scan(&r.UserID, &name, &avatar); err != nil {
			rows.Close()
			return nil, err
		}
		r.DisplayName, r.AvatarURL = nonEmpty(name), nonEmpty(avatar)
		if directoryMatch(r, words) {
			found = append(found, r)
		}
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return nil, fmt.Errorf("user directory: %w", err)
	}
	remote, remoteScanned, err := s.directoryByMemberEvents(ctx, joined, words, first)
	if err != nil {
		return nil, err
	}
	found = append(found, remote...)
	sort.Slice(found, func(i, j int) bool {
		a, b := directoryKey(found[i]), directoryKey(found[j])
		if a != b {
			return a < b
		}
		return found[i].UserID < found[j].UserID
	})
	if len(found) > limit {
		found, resp.Limited = found[:limit], true
	}
	if scanned == directoryScan || remoteScanned == directoryScan {
		resp.Limited = true // candidates were left unread
	}
	resp.Results = append(resp.Results, found...)
	return resp, nil
}

func nonEmpty(p *string) *string {
	if p == nil || *p == "" {
		return nil
	}
	return p
}

// directoryMatch: every word starts the localpart or a word of the display name.
func directoryMatch(r UserDirectoryResult, words []string) bool {
	local := strings.ToLower(strings.TrimPrefix(r.UserID, "@"))
	if i := strings.IndexByte(local, ':'); i >= 0 {
		local = local[:i]
	}
	var nameWords []string
	if r.DisplayName != nil {
		nameWords = strings.Fields(strings.ToLower(*r.DisplayName))
	}
	for _, w := range words {
		ok := strings.HasPrefix(local, w)
		for _, nw := range nameWords {
			if ok {
				break
			}
			ok = strings.HasPrefix(nw, w)
		}
		if !ok {
			return false
		}
	}
	return true
}

func directoryKey(r UserDirectoryResult) string {
	if r.DisplayName != nil {
		return strings.ToLower(*r.DisplayName)
	}
	return strings.ToLower(strings.TrimPrefix(r.UserID, "@"))
}

// asciiPrefix is the start of s up to its first non-ASCII character.
func asciiPrefix(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return s[:i]
		}
	}
	return s
}

// likeEscape escapes the LIKE wildcards of s (the escape character is \).
func likeEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// directoryRooms is the rooms whose joined members the directory shows:
// the searcher's ($1), the published ones ($2) and those anyone may join.
const directoryRooms = `(m.room_id IN ($1) OR m.room_id IN (SELECT room_id FROM rooms WHERE published = $2)
  OR m.room_id IN (SELECT j.room_id FROM room_state j JOIN events e ON e.event_id = j.event_id
    WHERE j.state_key = '' AND j.type = 'm.room.join_rules' AND e.json LIKE '%"join_rule":"public"%'))`

// directoryByMemberEvents finds the users without a profile here (other
// servers' users) among the joined members of the directory's rooms, by
// the display name and avatar of their member events (one of them when
// their rooms differ). The SQL narrows the candidates by the first word
// appearing in the member event (likeFirst is LIKE-escaped); the words are
// then matched in full. It returns how many rows it read.
func (s *Service) directoryByMemberEvents(ctx context.Context, joined, words []string, likeFirst string) ([]UserDirectoryResult, int, error) {
	// In the event's JSON, a word with a quote or a backslash is escaped:
	// only the part before them can be looked for.
	jsonFirst := likeFirst
	if i := strings.IndexAny(jsonFirst, `"`+"\\"); i >= 0 {
		jsonFirst = jsonFirst[:i]
	}
	rows, err := s.db.Query(ctx, `SELECT m.state_key, e.json FROM room_state m JOIN events e ON e.event_id = m.event_id
LEFT JOIN profiles p ON p.user_id = m.state_key
WHERE m.type = 'm.room.member' AND m.membership = 'join' AND p.user_id IS NULL AND `+directoryRooms+`
AND (LOWER(m.state_key) LIKE $3 ESCAPE '\' OR LOWER(e.json) LIKE $4 ESCAPE '\')
LIMIT $5`, joined, true, "@"+likeFirst+"%", "%"+jsonFirst+"%", directoryScan)
	if err != nil {
		return nil, 0, fmt.Errorf("user directory (member events): %w", err)
	}
	defer rows.Close()
	var found []UserDirectoryResult
	seen := map[string]bool{}
	scanned := 0
	for rows.Next() {
		scanned++
		var userID, js string
		if err := rows.Scan(&userID, &js); err != nil {
			return nil, 0, err
		}
		if seen[userID] {
			continue
		}
		var ev struct {
			Content struct {
				DisplayName any `json:"displayname"`
				AvatarURL   any `json:"avatar_url"`
			} `json:"content"`
		}
		_ = json.Unmarshal([]byte(js), &ev)
		r := UserDirectoryResult{UserID: userID}
		if v, ok := ev.Content.DisplayName.(string); ok && v != "" && len(v) <= maxDirectoryText {
			r.DisplayName = &v
		}
		if v, ok := ev.Content.AvatarURL.(string); ok && v != "" && len(v) <= maxDirectoryText {
			r.AvatarURL = &v
		}
		if directoryMatch(r, words) {
			seen[userID] = true
			found = append(found, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("user directory (member events): %w", err)
	}
	return found, scanned, nil
}
