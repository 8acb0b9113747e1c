// Package sytest is Haven's end-to-end suite: every test starts the real
// server binary on a loopback port, on SQLite and on PostgreSQL, and drives
// it with real clients (mautrix-go here; matrix-js-sdk under sytest/js).
package sytest
