// Package totp is the second factor of Haven's sign-in: time-based one-time
// passwords (RFC 6238 with the parameters every authenticator app supports:
// HMAC-SHA-1, 6 digits, 30-second steps, one step of clock skew either way)
// and recovery codes.
//
// A user's secret is made by the user's own enrolment (Begin, then Confirm
// with a first code, which also gives ten recovery codes) or by an admin
// (Enroll, `haven admin totp-enroll`, counted at once). Verify accepts a
// code only for a step later than the last one accepted
// (totp_secrets.last_step, moved forward with a conditional UPDATE so that
// two processes cannot both accept one code), or an unused recovery code
// (stored as its SHA-256, used once). Wrong codes are limited per user
// (MaxFailures per FailureWindow, in memory, per process).
//
// Secrets are encrypted at rest with AES-256-GCM when
// auth.totp_encryption_key is set (the user ID is the additional data, so a
// secret copied to another row does not open); they are never logged.
//
// Tables owned: totp_secrets, totp_recovery_codes (migration 0031).
// Goroutines: none. Locks: one mutex over the failure counts, held for no
// I/O.
package totp
