package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// Stream names of the restore windows (table restore_windows): one per
// stream whose positions a sync token carries. Typing is not among them:
// its positions run on the clock and nothing is stored at them.
const (
	StreamEvents      = "events"
	StreamReceipts    = "receipts"
	StreamAccountData = "account_data"
	StreamToDevice    = "to_device"
	StreamDeviceLists = "device_lists"
	StreamPresence    = "presence"
	StreamPeeks       = "peeks"
)

// Streams lists every stream a restore moves on.
var Streams = []string{StreamEvents, StreamReceipts, StreamAccountData, StreamToDevice, StreamDeviceLists, StreamPresence, StreamPeeks}

// RestoreWindow is the range of a stream's positions lost at a restore:
// those in (LostAfter, Base) may have been handed out by the server before
// the restore, after its backup was taken, and exist no more. Base itself
// is the restored server's first visible position (its tokens name it
// until something new is written), never one the old server reached.
type RestoreWindow struct {
	Stream    string
	LostAfter int64
	Base      int64
}

// Contains tells whether pos falls in the lost range.
func (w RestoreWindow) Contains(pos int64) bool { return pos > w.LostAfter && pos < w.Base }

// RestoreWindows reads every recorded window (none on a database that was
// never restored).
func RestoreWindows(ctx context.Context, q Querier) ([]RestoreWindow, error) {
	rows, err := q.Query(ctx, `SELECT stream, lost_after, base FROM restore_windows ORDER BY stream, restored_ts`)
	if err != nil {
		return nil, fmt.Errorf("select restore windows: %w", err)
	}
	defer rows.Close()
	var out []RestoreWindow
	for rows.Next() {
		var w RestoreWindow
		if err := rows.Scan(&w.Stream, &w.LostAfter, &w.Base); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// StreamFloor is the position a stream's counter must start above: the
// highest base a restore set for it (0 when never restored). Each stream's
// writer starts at the larger of this and its highest stored position, so
// no position handed out before a restore is handed out again.
func StreamFloor(ctx context.Context, q Querier, stream string) (int64, error) {
	var n sql.NullInt64
	if err := q.QueryRow(ctx, `SELECT MAX(base) FROM restore_windows WHERE stream = $1`, stream).Scan(&n); err != nil {
		return 0, fmt.Errorf("select restore floor of %s: %w", stream, err)
	}
	return n.Int64, nil
}
