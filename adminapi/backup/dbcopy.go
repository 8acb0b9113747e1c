package backup

import (
	"context"
	"fmt"
	"strings"

	"github.com/haven-chat/haven/storage"
)

// The database copy of every backup is an SQLite file with Haven's schema,
// whichever engine it came from: SQLite's own VACUUM INTO, or for
// PostgreSQL every table copied in one REPEATABLE READ snapshot into an
// SQLite file migrated to the same schema version. verify opens it the
// same way for both, and a restore loads it into either engine.

// copyTables lists the tables whose rows a copy carries: every table of the
// SQLite file but schema_migrations (the migrations write it) and the
// shadow tables of virtual (full-text) tables, which SQLite fills itself.
func copyTables(ctx context.Context, q storage.Querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT name, COALESCE(sql, '') FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	var names, virtual []string
	for rows.Next() {
		var name, sqlText string
		if err := rows.Scan(&name, &sqlText); err != nil {
			return nil, err
		}
		if strings.HasPrefix(strings.ToUpper(sqlText), "CREATE VIRTUAL TABLE") {
			virtual = append(virtual, name)
		}
		names = append(names, name)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []string
next:
	for _, n := range names {
		if n == "schema_migrations" {
			continue
		}
		for _, v := range virtual {
			if strings.HasPrefix(n, v+"_") {
				continue next
			}
		}
		out = append(out, n)
	}
	return out, nil
}

// sqliteColumns lists a table's columns in the SQLite file; a virtual
// table's rowid (the full-text index's key) is one of them.
func sqliteColumns(ctx context.Context, q storage.Querier, table string) ([]string, error) {
	var sqlText string
	if err := q.QueryRow(ctx, `SELECT COALESCE(sql, '') FROM sqlite_master WHERE type = 'table' AND name = $1`, table).Scan(&sqlText); err != nil {
		return nil, fmt.Errorf("table %s: %w", table, err)
	}
	var cols []string
	if strings.HasPrefix(strings.ToUpper(sqlText), "CREATE VIRTUAL TABLE") {
		cols = append(cols, "rowid")
	}
	rows, err := q.Query(ctx, `SELECT name FROM pragma_table_info($1) ORDER BY cid`, table)
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

// pgColumns maps each PostgreSQL table of the current schema to its
// columns and their types, leaving out generated ones (one query: the
// catalog of a database with many schemas is slow to ask table by table).
func pgColumns(ctx context.Context, q storage.Querier) (map[string]map[string]string, error) {
	rows, err := q.Query(ctx, `SELECT table_name, column_name, data_type FROM information_schema.columns
WHERE table_schema = current_schema() AND is_generated = 'NEVER'`)
	if err != nil {
		return nil, fmt.Errorf("list columns: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]string{}
	for rows.Next() {
		var tb, c, t string
		if err := rows.Scan(&tb, &c, &t); err != nil {
			return nil, err
		}
		if out[tb] == nil {
			out[tb] = map[string]string{}
		}
		out[tb][c] = t
	}
	return out, rows.Err()
}

// tablePlan is one table to copy: its columns, and for a PostgreSQL
// destination their types (for the values SQLite stores differently).
type tablePlan struct {
	table string
	cols  []string
	types []string
	// add keeps the destination's rows (an incremental's appended rows).
	add bool
}

// plan lists the tables and columns to copy between the SQLite file (lite)
// and a PostgreSQL database (pg): the columns both have.
func plan(ctx context.Context, lite, pg storage.Querier) ([]tablePlan, error) {
	tables, err := copyTables(ctx, lite)
	if err != nil {
		return nil, err
	}
	all, err := pgColumns(ctx, pg)
	if err != nil {
		return nil, err
	}
	var out []tablePlan
	for _, t := range tables {
		lc, err := sqliteColumns(ctx, lite, t)
		if err != nil {
			return nil, err
		}
		pc := all[t]
		if len(pc) == 0 {
			return nil, fmt.Errorf("table %s is missing from the PostgreSQL database", t)
		}
		p := tablePlan{table: t}
		for _, c := range lc {
			if typ, ok := pc[c]; ok {
				p.cols = append(p.cols, c)
				p.types = append(p.types, typ)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// copyRows copies a table's rows from src into dst in batches, each batch
// one write transaction; count is told of the rows copied.
func copyRows(ctx context.Context, src storage.Querier, dst *storage.DB, p tablePlan, toPostgres bool, pace *pacer, count func(int)) error {
	if len(p.cols) == 0 {
		return nil
	}
	// The destination was just migrated: rows the migrations seeded (a
	// table's initial position, say) give way to the source's.
	if !p.add {
		if err := dst.Write(ctx, func(tx *storage.Tx) error {
			_, err := tx.Exec(ctx, `DELETE FROM `+p.table)
			return err
		}); err != nil {
			return fmt.Errorf("empty %s: %w", p.table, err)
		}
	}
	cols := strings.Join(p.cols, ", ")
	rows, err := src.Query(ctx, `SELECT `+cols+` FROM `+p.table)
	if err != nil {
		return fmt.Errorf("read %s: %w", p.table, err)
	}
	defer rows.Close()
	per := max(1, min(500, 30000/len(p.cols)))
	batch := make([]any, 0, per*len(p.cols))
	n, size := 0, 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		var b strings.Builder
		b.WriteString("INSERT INTO " + p.table + " (" + cols + ") VALUES ")
		k := 1
		for r := 0; r < n; r++ {
			if r > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('(')
			for c := range p.cols {
				if c > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, "$%d", k)
				k++
			}
			b.WriteByte(')')
		}
		args := batch
		err := dst.Write(ctx, func(tx *storage.Tx) error {
			_, err := tx.Exec(ctx, b.String(), args...)
			return err
		})
		if err != nil {
			return fmt.Errorf("write %s: %w", p.table, err)
		}
		count(n)
		batch = make([]any, 0, per*len(p.cols))
		n = 0
		// Paced by what was read: each batch's values, about as large as
		// the source read them.
		err = pace.wait(ctx, size)
		size = 0
		return err
	}
	vals := make([]any, len(p.cols))
	ptrs := make([]any, len(p.cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("read %s: %w", p.table, err)
		}
		for i, v := range vals {
			if toPostgres {
				v = toPG(v, p.types[i])
			}
			batch = append(batch, v)
			size += valueSize(v)
		}
		n++
		if n == per {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read %s: %w", p.table, err)
	}
	return flush()
}

// valueSize is about how many bytes a column value took to read.
func valueSize(v any) int {
	switch v := v.(type) {
	case []byte:
		return len(v)
	case string:
		return len(v)
	case nil:
		return 1
	default:
		return 8
	}
}

// toPG converts a value read from SQLite to the PostgreSQL column's type.
func toPG(v any, typ string) any {
	switch typ {
	case "boolean":
		switch x := v.(type) {
		case int64:
			return x != 0
		case string:
			return x == "1" || strings.EqualFold(x, "true")
		}
	case "bytea":
		if s, ok := v.(string); ok {
			return []byte(s)
		}
	case "text":
		if b, ok := v.([]byte); ok {
			return string(b)
		}
	}
	return v
}

// resetSequences moves every PostgreSQL sequence behind a column default
// (BIGSERIAL) above the highest value loaded.
func resetSequences(ctx context.Context, db *storage.DB) error {
	rows, err := db.Query(ctx, `SELECT table_name, column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND column_default LIKE 'nextval%'`)
	if err != nil {
		return fmt.Errorf("list sequences: %w", err)
	}
	type tc struct{ t, c string }
	var all []tc
	for rows.Next() {
		var x tc
		if err := rows.Scan(&x.t, &x.c); err != nil {
			rows.Close()
			return err
		}
		all = append(all, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, x := range all {
		err := db.Write(ctx, func(tx *storage.Tx) error {
			_, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence($1, $2), COALESCE((SELECT MAX(`+x.c+`) FROM `+x.t+`), 0) + 1, false)`, x.t, x.c)
			return err
		})
		if err != nil {
			return fmt.Errorf("reset the sequence of %s.%s: %w", x.t, x.c, err)
		}
	}
	return nil
}
