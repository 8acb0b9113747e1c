-- userapi: refresh tokens (spec v1.3). A device whose login or registration
-- asked for one has an access token that expires (token_expires_ts, ms; NULL
-- for one that never does) and a refresh token (refresh_hash). Refreshing
-- replaces both; the refresh token just used stays valid
-- (old_refresh_hash) until the new access token or refresh token is used,
-- so a client that lost the answer can refresh again. As for access tokens,
-- only the SHA-256 of refresh tokens is stored.
ALTER TABLE devices ADD COLUMN token_expires_ts BIGINT;
ALTER TABLE devices ADD COLUMN refresh_hash TEXT;
ALTER TABLE devices ADD COLUMN old_refresh_hash TEXT;
CREATE UNIQUE INDEX devices_refresh ON devices (refresh_hash) WHERE refresh_hash IS NOT NULL;
CREATE UNIQUE INDEX devices_old_refresh ON devices (old_refresh_hash) WHERE old_refresh_hash IS NOT NULL;
