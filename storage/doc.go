// Package storage opens Haven's one database (SQLite or PostgreSQL), runs the
// embedded numbered migrations, and gives table code one SQL text for both
// engines.
//
// Conventions: placeholders are $1, $2, ...; a slice argument expands its
// placeholder into a list, for IN ($1); upserts use ON CONFLICT ... DO UPDATE
// SET x = excluded.x; RETURNING works on both. A migration line ending in
// "-- only: postgres" or "-- only: sqlite" is applied on that engine only.
//
// SQLite gets one write connection (WAL, immediate transactions) and a read
// pool; PostgreSQL one pool for both. Write transactions never wait on
// anything but the database, so no long-poll ever holds a connection.
//
// Tables are owned by the packages named in the migration comments; this
// package owns schema_migrations. It starts no goroutines.
package storage
