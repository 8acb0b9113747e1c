package backup

import (
	"context"
	"fmt"

	"github.com/haven-chat/haven/storage"
)

// hasTable tells whether the SQLite file has a table (an older schema may not).
func hasTable(ctx context.Context, q storage.Querier, name string) (bool, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1`, name).Scan(&n)
	return n > 0, err
}

// streamMax are the queries of each stream's highest stored position, as
// its writer reads them at start (roomserver, userapi, userapi/keys, syncapi).
var streamMax = map[string][]struct{ table, query string }{
	storage.StreamEvents:      {{"events", `SELECT COALESCE(MAX(pos), 0) FROM events`}},
	storage.StreamReceipts:    {{"receipts", `SELECT COALESCE(MAX(pos), 0) FROM receipts`}},
	storage.StreamAccountData: {{"account_data", `SELECT COALESCE(MAX(pos), 0) FROM account_data`}},
	storage.StreamToDevice: {{"to_device", `SELECT COALESCE(MAX(pos), 0) FROM to_device`},
		{"key_stream_positions", `SELECT COALESCE(MAX(pos), 0) FROM key_stream_positions WHERE stream = 'to_device'`}},
	storage.StreamDeviceLists: {{"device_list_changes", `SELECT COALESCE(MAX(pos), 0) FROM device_list_changes`},
		{"key_stream_positions", `SELECT COALESCE(MAX(pos), 0) FROM key_stream_positions WHERE stream = 'device_lists'`}},
	storage.StreamPresence: {{"presence", `SELECT COALESCE(MAX(pos), 0) FROM presence`}},
	storage.StreamPeeks:    {{"peeks", `SELECT COALESCE(MAX(pos), 0) FROM peeks`}},
}

// Positions reads each stream's highest position from a database copy
// (an SQLite file): the highest stored, or the base an earlier restore
// set, whichever is larger.
func Positions(ctx context.Context, q storage.Querier) (map[string]int64, error) {
	out := map[string]int64{}
	windows, err := hasTable(ctx, q, "restore_windows")
	if err != nil {
		return nil, err
	}
	for _, s := range storage.Streams {
		var best int64
		for _, m := range streamMax[s] {
			ok, err := hasTable(ctx, q, m.table)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			var n int64
			if err := q.QueryRow(ctx, m.query).Scan(&n); err != nil {
				return nil, fmt.Errorf("position of %s: %w", s, err)
			}
			best = max(best, n)
		}
		if windows {
			f, err := storage.StreamFloor(ctx, q, s)
			if err != nil {
				return nil, err
			}
			best = max(best, f)
		}
		out[s] = best
	}
	return out, nil
}

// CountRows reads the figures a manifest records.
func CountRows(ctx context.Context, q storage.Querier) (Counts, error) {
	var c Counts
	for _, x := range []struct {
		table string
		into  *int64
	}{{"accounts", &c.Users}, {"rooms", &c.Rooms}, {"events", &c.Events}, {"media", &c.Media}} {
		if err := q.QueryRow(ctx, `SELECT COUNT(*) FROM `+x.table).Scan(x.into); err != nil {
			return c, fmt.Errorf("count %s: %w", x.table, err)
		}
	}
	return c, nil
}

// schemaVersion reads a database copy's schema version.
func schemaVersion(ctx context.Context, q storage.Querier) (int, error) {
	var v int
	if err := q.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}
