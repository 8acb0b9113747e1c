//go:build cgo && sqlite_cgo && !sqlite_fts5

package storage

// Search needs SQLite's FTS5, which github.com/mattn/go-sqlite3 compiles in
// only with its sqlite_fts5 tag. This build stops here with the fix in the
// identifier's name.
var _ = build_with_tags_sqlite_cgo_and_sqlite_fts5_together
