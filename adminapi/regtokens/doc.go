// Package regtokens keeps the registration tokens that admins make through
// the admin API (/_synapse/admin/v1/registration_tokens) and that people
// give at /register's m.login.registration_token stage, when
// registration.require_token is on.
//
// A token may have a number of uses and an expiry time. Passing the stage
// takes a use at once (pending), so that two registrations cannot share a
// token's last use; when the registration ends the use is counted as
// completed, or given back if the account could not be made.
//
// Tables owned: registration_tokens (migration 0025_admin_users.sql).
//
// Goroutines: none. Locks: none.
package regtokens
