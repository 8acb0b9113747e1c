-- mediaapi: uploaded files and their thumbnails. The bytes live under
-- data_dir/media, named by their SHA-256; these rows are the metadata.

-- One row per media ID. Identical uploads share one file (sha256) but each
-- upload has its own row. An ID made by /media/v1/create is pending until
-- its upload: sha256 is '' and expires_ts is when the unused ID lapses.
CREATE TABLE media (
	media_id     TEXT PRIMARY KEY,
	user_id      TEXT NOT NULL,
	content_type TEXT NOT NULL DEFAULT '',
	filename     TEXT NOT NULL DEFAULT '',
	size         BIGINT NOT NULL DEFAULT 0,
	sha256       TEXT NOT NULL DEFAULT '',
	created_ts   BIGINT NOT NULL,
	expires_ts   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX media_user ON media (user_id, expires_ts);
CREATE INDEX media_sha256 ON media (sha256);

-- Thumbnails of a content hash (shared by every media ID with that content),
-- one per standard size and method; their bytes are files too.
CREATE TABLE media_thumbnails (
	sha256       TEXT NOT NULL,
	width        INTEGER NOT NULL,
	height       INTEGER NOT NULL,
	method       TEXT NOT NULL,
	animated     BOOLEAN NOT NULL,
	content_type TEXT NOT NULL,
	thumb_sha256 TEXT NOT NULL,
	size         BIGINT NOT NULL,
	created_ts   BIGINT NOT NULL,
	PRIMARY KEY (sha256, width, height, method, animated)
);
