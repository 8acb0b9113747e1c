-- userapi: OpenID tokens (POST /user/{userId}/openid/request_token), which
-- a widget or integration server checks with GET
-- /_matrix/federation/v1/openid/userinfo. As for access tokens only their
-- SHA-256 is stored. Expired ones are deleted when new ones are made.
CREATE TABLE openid_tokens (
	token_hash TEXT PRIMARY KEY,
	user_id    TEXT NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expires ON openid_tokens (expires_ts);
CREATE INDEX openid_tokens_user ON openid_tokens (user_id);
