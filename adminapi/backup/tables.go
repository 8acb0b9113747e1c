package backup

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/haven-chat/haven/storage"
)

// A PostgreSQL database is copied table by table into an SQLite file (one
// REPEATABLE READ snapshot), whose pages say nothing of what changed: a
// table copied again lands elsewhere. So its incrementals work per table:
// each backup records a checksum of every table's rows (tableSum), and an
// incremental holds, in TableDeltaFile, only the tables whose checksum
// differs from its base's, whole; but a table with stream positions (a
// pos column: events, receipts, to_device, ...) whose rows up to the
// base's highest position still checksum to the base's table only grew,
// and only its newer rows are kept (Appended). A restore loads the chain's full copy,
// replaces those tables' rows link by link, and checks every table's
// checksum against the manifest. The snapshot is still read whole each
// time (PostgreSQL is read, only less is written), and a table with one
// changed row is stored whole: events, the largest, changes with every
// message, but is appended to: its new rows alone are stored unless an
// old one changed (a redaction), and then it is stored whole.

// tableSum is a checksum of a table's rows that does not depend on their
// order: the SHA-256 of each row (its values, typed) added up in four
// 64-bit lanes, with the row count.
func tableSum(ctx context.Context, q storage.Querier, table, where string, args ...any) (string, error) {
	cols, err := sqliteColumns(ctx, q, table)
	if err != nil {
		return "", err
	}
	rows, err := q.Query(ctx, `SELECT `+strings.Join(cols, ", ")+` FROM `+table+where, args...)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", table, err)
	}
	defer rows.Close()
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var lanes [4]uint64
	var n int64
	var b []byte
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return "", fmt.Errorf("read %s: %w", table, err)
		}
		b = b[:0]
		for _, v := range vals {
			b = appendValue(b, v)
		}
		h := sha256.Sum256(b)
		for i := range lanes {
			lanes[i] += binary.BigEndian.Uint64(h[i*8:])
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("read %s: %w", table, err)
	}
	out := make([]byte, 32)
	for i, l := range lanes {
		binary.BigEndian.PutUint64(out[i*8:], l)
	}
	return fmt.Sprintf("%d:%s", n, hex.EncodeToString(out)), nil
}

// appendValue encodes a value with its type and length, so that no two
// rows encode alike.
func appendValue(b []byte, v any) []byte {
	var kind byte
	var data []byte
	switch x := v.(type) {
	case nil:
		kind = 'n'
	case int64:
		kind, data = 'i', binary.BigEndian.AppendUint64(nil, uint64(x))
	case float64:
		kind, data = 'f', []byte(fmt.Sprint(x))
	case bool:
		kind, data = 'i', binary.BigEndian.AppendUint64(nil, map[bool]uint64{false: 0, true: 1}[x])
	case string:
		kind, data = 't', []byte(x)
	case []byte:
		kind, data = 'b', x
	default:
		kind, data = 'o', []byte(fmt.Sprint(x))
	}
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, uint64(len(data)))
	return append(b, data...)
}

// tableSums checksums every table a copy carries.
func tableSums(ctx context.Context, q storage.Querier) (map[string]string, error) {
	tables, err := copyTables(ctx, q)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, t := range tables {
		if out[t], err = tableSum(ctx, q, t, ""); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// sumsDigest is one checksum of all the table checksums: the table
// method's database checksum (Database.SHA256).
func sumsDigest(sums map[string]string) string {
	var names []string
	for k := range sums {
		names = append(names, k)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, k := range names {
		fmt.Fprintf(h, "%s=%s\n", k, sums[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// finishTables turns the full copy at dir/DatabaseFile into what the
// backup keeps: for a full backup the copy itself, with its table
// checksums; for an incremental a TableDeltaFile with the tables that
// changed since base only.
func finishTables(ctx context.Context, dir string, base *Manifest, m *Manifest) error {
	copyPath := filepath.Join(dir, DatabaseFile)
	lite, err := storage.Connect(ctx, storage.Target{Dialect: storage.SQLite, Path: copyPath}, storage.Options{MaxOpenConns: 1, SQLiteSynchronous: "OFF"})
	if err != nil {
		return err
	}
	defer lite.Close()
	sums, err := tableSums(ctx, lite)
	if err != nil {
		return err
	}
	m.Database.Tables = sums
	m.Database.SHA256 = sumsDigest(sums)
	if m.Database.Tops, err = tableTops(ctx, lite, sums); err != nil {
		return err
	}
	if base == nil {
		m.Database.File = DatabaseFile
		return nil
	}
	var names []string
	for t := range sums {
		names = append(names, t)
	}
	sort.Strings(names)
	m.Database.ChangedTables = []string{}
	for _, t := range names {
		leaveOut := func(where string, args ...any) error {
			return lite.Write(ctx, func(tx *storage.Tx) error {
				_, err := tx.Exec(ctx, `DELETE FROM `+t+where, args...)
				return err
			})
		}
		if base.Database.Tables[t] == sums[t] {
			// Dropped, not emptied: an empty table and its indexes still
			// take pages, hundreds of them over the whole schema.
			if err := lite.Write(ctx, func(tx *storage.Tx) error {
				_, err := tx.Exec(ctx, `DROP TABLE `+t)
				return err
			}); err != nil {
				return fmt.Errorf("leave out %s: %w", t, err)
			}
			continue
		}
		// A table with positions whose rows up to the base's highest are
		// the base's rows exactly only grew: keep the new rows alone.
		if top, ok := base.Database.Tops[t]; ok {
			old, err := tableSum(ctx, lite, t, ` WHERE pos IS NULL OR pos <= $1`, top)
			if err != nil {
				return err
			}
			if old == base.Database.Tables[t] {
				if err := leaveOut(` WHERE pos IS NULL OR pos <= $1`, top); err != nil {
					return fmt.Errorf("leave out %s: %w", t, err)
				}
				if m.Database.Appended == nil {
					m.Database.Appended = map[string]int64{}
				}
				m.Database.Appended[t] = top
			}
		}
		m.Database.ChangedTables = append(m.Database.ChangedTables, t)
	}
	if err := lite.CopyInto(ctx, filepath.Join(dir, TableDeltaFile)); err != nil {
		return err
	}
	lite.Close()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(copyPath + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := syncFile(filepath.Join(dir, TableDeltaFile)); err != nil {
		return err
	}
	m.Database.File = ""
	m.Database.Delta = TableDeltaFile
	m.Database.Base = base.ID
	m.Database.BaseSHA256 = base.Database.SHA256
	return nil
}

// tableTops are the highest positions (column pos) of the tables that have one.
func tableTops(ctx context.Context, q storage.Querier, sums map[string]string) (map[string]int64, error) {
	out := map[string]int64{}
	for t := range sums {
		cols, err := sqliteColumns(ctx, q, t)
		if err != nil {
			return nil, err
		}
		for _, c := range cols {
			if c != "pos" {
				continue
			}
			var top int64
			if err := q.QueryRow(ctx, `SELECT COALESCE(MAX(pos), 0) FROM `+t).Scan(&top); err != nil {
				return nil, fmt.Errorf("highest position of %s: %w", t, err)
			}
			out[t] = top
		}
	}
	return out, nil
}

// applyTables replaces, in the database at dst, the rows of the tables an
// incremental's TableDeltaFile holds, or adds them to the tables it
// records as appended to.
func applyTables(ctx context.Context, dst *storage.DB, delta string, tables []string, appended map[string]int64, scratch string) error {
	// A copy: opening the backup's own file could change it.
	tmp := filepath.Join(scratch, "delta.db")
	defer func() {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			os.Remove(tmp + suffix)
		}
	}()
	if _, err := copyFile(delta, tmp); err != nil {
		return err
	}
	d, err := storage.Connect(ctx, storage.Target{Dialect: storage.SQLite, Path: tmp}, storage.Options{MaxOpenConns: 1, SQLiteSynchronous: "OFF"})
	if err != nil {
		return err
	}
	defer d.Close()
	for _, t := range tables {
		cols, err := sqliteColumns(ctx, d, t)
		if err != nil {
			return err
		}
		_, add := appended[t]
		if err := copyRows(ctx, d, dst, tablePlan{table: t, cols: cols, add: add}, false, nil, func(int) {}); err != nil {
			return err
		}
	}
	return nil
}
