-- userapi/oauth: the OAuth 2.0 API (spec v1.15). oauth_clients are the
-- clients registered through dynamic client registration (their metadata
-- as JSON). oauth_codes are the authorization codes not yet exchanged,
-- stored as their SHA-256, single use, bound to the client, the redirect
-- URI, the scope and the PKCE challenge. oauth_sessions name the client
-- each OAuth device was issued to, for the refresh and revocation checks.
CREATE TABLE oauth_clients (
	client_id  TEXT PRIMARY KEY,
	metadata   TEXT NOT NULL,
	created_ts BIGINT NOT NULL
);
CREATE TABLE oauth_codes (
	code_hash      TEXT PRIMARY KEY,
	client_id      TEXT NOT NULL,
	user_id        TEXT NOT NULL,
	redirect_uri   TEXT NOT NULL,
	scope          TEXT NOT NULL,
	device_id      TEXT NOT NULL,
	code_challenge TEXT NOT NULL,
	expires_ts     BIGINT NOT NULL,
	used           BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX oauth_codes_expires ON oauth_codes (expires_ts);
CREATE TABLE oauth_sessions (
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	client_id  TEXT NOT NULL,
	scope      TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);
