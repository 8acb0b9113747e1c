-- userapi/totp: two-factor sign-in. One row per user with a TOTP secret
-- (encrypted with auth.totp_encryption_key when set: "v1:" + base64 of
-- nonce and AES-GCM ciphertext, else "plain:" + base32). confirmed is
-- false while a user's own enrolment waits for its first code; last_step
-- is the last time step accepted, so that no code is accepted twice.
CREATE TABLE totp_secrets (
	user_id    TEXT PRIMARY KEY,
	secret     TEXT NOT NULL,
	confirmed  BOOLEAN NOT NULL DEFAULT FALSE,
	last_step  BIGINT NOT NULL DEFAULT 0,
	created_ts BIGINT NOT NULL
);

-- Recovery codes, stored as the SHA-256 of the code; a used code has used_ts.
CREATE TABLE totp_recovery_codes (
	user_id   TEXT NOT NULL,
	code_hash TEXT NOT NULL,
	used_ts   BIGINT,
	PRIMARY KEY (user_id, code_hash)
);

-- userapi: short-lived single-use login tokens (m.login.token), made by
-- the sign-in page and exchanged for an access token; only their SHA-256
-- is stored.
CREATE TABLE login_tokens (
	token_hash TEXT PRIMARY KEY,
	user_id    TEXT NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX login_tokens_expires ON login_tokens (expires_ts);
