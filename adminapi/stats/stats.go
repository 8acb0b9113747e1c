package stats

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Stats reads the statistics from the database.
type Stats struct {
	db         *storage.DB
	serverName string
	now        func() time.Time
}

// New returns the statistics of the server's database.
func New(db *storage.DB, serverName string) *Stats {
	return &Stats{db: db, serverName: serverName, now: time.Now}
}

// UserMedia is one user's media use.
type UserMedia struct {
	UserID      string  `json:"user_id"`
	DisplayName *string `json:"displayname"`
	MediaCount  int64   `json:"media_count"`
	MediaLength int64   `json:"media_length"`
}

// UserMediaQuery selects and orders the users of UsersMedia.
type UserMediaQuery struct {
	From, Limit int
	// OrderBy is user_id, displayname, media_length (the default) or media_count.
	OrderBy   string
	Backwards bool
	// FromTS and UntilTS (milliseconds, 0 for none) bound the uploads counted.
	FromTS, UntilTS int64
	// Search matches the user ID's localpart or the display name.
	Search string
}

var userMediaOrder = map[string]string{
	"": "media_length", "media_length": "media_length", "media_count": "media_count",
	"user_id": "m.user_id", "displayname": "COALESCE(p.displayname, '')",
}

// ValidUserMediaOrder tells whether order_by is known.
func ValidUserMediaOrder(by string) bool { _, ok := userMediaOrder[by]; return ok }

// UsersMedia lists local users with uploads and what they use, and how
// many such users there are.
func (s *Stats) UsersMedia(ctx context.Context, q UserMediaQuery) ([]UserMedia, int64, error) {
	col, ok := userMediaOrder[q.OrderBy]
	if !ok {
		return nil, 0, merr.InvalidParam("Unknown order_by %q", q.OrderBy)
	}
	dir := "ASC"
	if q.Backwards {
		dir = "DESC"
	}
	where := []string{"m.sha256 <> ''"}
	args := []any{}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if q.FromTS > 0 {
		where = append(where, "m.created_ts >= "+arg(q.FromTS))
	}
	if q.UntilTS > 0 {
		where = append(where, "m.created_ts <= "+arg(q.UntilTS))
	}
	if q.Search != "" {
		p := "%" + strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(strings.ToLower(q.Search)) + "%"
		a := arg(p)
		where = append(where, "(LOWER(m.user_id) LIKE "+a+` ESCAPE '\' OR LOWER(COALESCE(p.displayname, '')) LIKE `+a+` ESCAPE '\')`)
	}
	base := ` FROM media m LEFT JOIN profiles p ON p.user_id = m.user_id WHERE ` + strings.Join(where, " AND ")
	var total int64
	if err := s.db.QueryRow(ctx, `SELECT COUNT(DISTINCT m.user_id)`+base, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count media users: %w", err)
	}
	limit, from := arg(q.Limit), arg(q.From)
	rows, err := s.db.Query(ctx, `SELECT m.user_id, p.displayname AS displayname, COUNT(*) AS media_count, COALESCE(SUM(m.size), 0) AS media_length`+base+
		` GROUP BY m.user_id, p.displayname ORDER BY `+col+` `+dir+`, m.user_id `+dir+` LIMIT `+limit+` OFFSET `+from, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("media users: %w", err)
	}
	defer rows.Close()
	out := []UserMedia{}
	for rows.Next() {
		var u UserMedia
		if err := rows.Scan(&u.UserID, &u.DisplayName, &u.MediaCount, &u.MediaLength); err != nil {
			return nil, 0, err
		}
		out = append(out, u)
	}
	return out, total, rows.Err()
}

// RoomSize is a room's estimated share of the database.
type RoomSize struct {
	RoomID        string `json:"room_id"`
	EstimatedSize int64  `json:"estimated_size"`
}

// LargestRooms returns the ten rooms whose events take the most bytes.
func (s *Stats) LargestRooms(ctx context.Context) ([]RoomSize, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id, COALESCE(SUM(LENGTH(json)), 0) AS size FROM events GROUP BY room_id ORDER BY size DESC, room_id LIMIT 10`)
	if err != nil {
		return nil, fmt.Errorf("room sizes: %w", err)
	}
	defer rows.Close()
	out := []RoomSize{}
	for rows.Next() {
		var r RoomSize
		if err := rows.Scan(&r.RoomID, &r.EstimatedSize); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// DayCount is a number for one day (UTC).
type DayCount struct {
	Date  string `json:"date"`
	Count int64  `json:"count"`
}

// Server is Haven's server overview.
type Server struct {
	ServerName         string     `json:"server_name"`
	TotalUsers         int64      `json:"total_users"`
	DeactivatedUsers   int64      `json:"deactivated_users"`
	GuestUsers         int64      `json:"guest_users"`
	AdminUsers         int64      `json:"admin_users"`
	TotalRooms         int64      `json:"total_rooms"`
	PublicRooms        int64      `json:"public_rooms"`
	DailyMessages      int64      `json:"daily_messages"`
	MessagesPerDay     []DayCount `json:"messages_per_day"`
	DailyActiveUsers   int64      `json:"daily_active_users"`
	MonthlyActiveUsers int64      `json:"monthly_active_users"`
	MediaCount         int64      `json:"media_count"`
	MediaBytes         int64      `json:"media_bytes"`
	DatabaseEngine     string     `json:"database_engine"`
	DatabaseSizeBytes  int64      `json:"database_size_bytes"`
	GeneratedTS        int64      `json:"generated_ts"`
}

const day = 24 * time.Hour

// ServerStats counts users, rooms, messages (m.room.message and
// m.room.encrypted events) per day over the last days (at most 90), active
// users (a device seen within a day, within 30 days), media and the
// database's size.
func (s *Stats) ServerStats(ctx context.Context, days int) (Server, error) {
	days = min(max(days, 1), 90)
	now := s.now()
	out := Server{ServerName: s.serverName, DatabaseEngine: s.db.Dialect().String(), GeneratedTS: now.UnixMilli(), MessagesPerDay: []DayCount{}}
	counts := []struct {
		dst  *int64
		sql  string
		args []any
	}{
		{&out.TotalUsers, `SELECT COUNT(*) FROM accounts`, nil},
		{&out.DeactivatedUsers, `SELECT COUNT(*) FROM accounts WHERE deactivated`, nil},
		{&out.GuestUsers, `SELECT COUNT(*) FROM accounts WHERE is_guest`, nil},
		{&out.AdminUsers, `SELECT COUNT(*) FROM accounts WHERE is_admin`, nil},
		{&out.TotalRooms, `SELECT COUNT(*) FROM rooms`, nil},
		{&out.PublicRooms, `SELECT COUNT(*) FROM rooms WHERE published`, nil},
		{&out.DailyMessages, `SELECT COUNT(*) FROM events WHERE origin_ts >= $1 AND type IN ('m.room.message', 'm.room.encrypted') AND state_key IS NULL`, []any{now.Add(-day).UnixMilli()}},
		{&out.DailyActiveUsers, `SELECT COUNT(DISTINCT user_id) FROM devices WHERE last_seen_ts >= $1`, []any{now.Add(-day).UnixMilli()}},
		{&out.MonthlyActiveUsers, `SELECT COUNT(DISTINCT user_id) FROM devices WHERE last_seen_ts >= $1`, []any{now.Add(-30 * day).UnixMilli()}},
		{&out.MediaCount, `SELECT COUNT(*) FROM media WHERE sha256 <> ''`, nil},
		{&out.MediaBytes, `SELECT COALESCE(SUM(size), 0) FROM media WHERE sha256 <> ''`, nil},
	}
	for _, c := range counts {
		if err := s.db.QueryRow(ctx, c.sql, c.args...).Scan(c.dst); err != nil {
			return out, fmt.Errorf("server statistics: %w", err)
		}
	}
	start := now.UTC().Truncate(day).Add(-time.Duration(days-1) * day)
	rows, err := s.db.Query(ctx, `SELECT origin_ts / 86400000 AS d, COUNT(*) FROM events
WHERE origin_ts >= $1 AND type IN ('m.room.message', 'm.room.encrypted') AND state_key IS NULL GROUP BY d ORDER BY d`, start.UnixMilli())
	if err != nil {
		return out, fmt.Errorf("messages per day: %w", err)
	}
	perDay := map[int64]int64{}
	for rows.Next() {
		var d, n int64
		if err := rows.Scan(&d, &n); err != nil {
			rows.Close()
			return out, err
		}
		perDay[d] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, err
	}
	for t := start; !t.After(now); t = t.Add(day) {
		out.MessagesPerDay = append(out.MessagesPerDay, DayCount{Date: t.Format("2006-01-02"), Count: perDay[t.UnixMilli()/int64(day/time.Millisecond)]})
	}
	sizeSQL := `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`
	if s.db.Dialect() == storage.Postgres {
		sizeSQL = `SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')`
	}
	if err := s.db.QueryRow(ctx, sizeSQL).Scan(&out.DatabaseSizeBytes); err != nil {
		return out, fmt.Errorf("database size: %w", err)
	}
	return out, nil
}
