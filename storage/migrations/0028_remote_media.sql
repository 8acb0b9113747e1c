-- mediaapi: other servers' media, fetched over federation once and served
-- from here afterwards. The bytes are files of the media store (named by
-- their SHA-256, shared with local media of the same content); a row is
-- written only once its file is complete. last_access_ts (updated at most
-- hourly) tells purge_media_cache what has not been asked for lately.
CREATE TABLE remote_media (
	origin         TEXT NOT NULL,
	media_id       TEXT NOT NULL,
	content_type   TEXT NOT NULL DEFAULT '',
	filename       TEXT NOT NULL DEFAULT '',
	size           BIGINT NOT NULL,
	sha256         TEXT NOT NULL,
	created_ts     BIGINT NOT NULL,
	last_access_ts BIGINT NOT NULL,
	PRIMARY KEY (origin, media_id)
);
CREATE INDEX remote_media_sha256 ON remote_media (sha256);
CREATE INDEX remote_media_last_access ON remote_media (last_access_ts);
