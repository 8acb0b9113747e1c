-- Server-side key backup (userapi/roomkeys) and content reports (adminapi/reports).

-- userapi/roomkeys: one row per backup version of a user. Versions count up
-- per user and are never reused: a deleted version keeps its row (deleted).
-- etag changes whenever the version's keys change.
CREATE TABLE room_key_backups (
	user_id    TEXT NOT NULL,
	version    BIGINT NOT NULL,
	algorithm  TEXT NOT NULL,
	auth_data  TEXT NOT NULL,
	etag       BIGINT NOT NULL DEFAULT 0,
	deleted    BOOLEAN NOT NULL DEFAULT FALSE,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, version)
);

-- userapi/roomkeys: the backed-up Megolm sessions of a version
CREATE TABLE room_keys (
	user_id             TEXT NOT NULL,
	version             BIGINT NOT NULL,
	room_id             TEXT NOT NULL,
	session_id          TEXT NOT NULL,
	first_message_index BIGINT NOT NULL,
	forwarded_count     BIGINT NOT NULL,
	is_verified         BOOLEAN NOT NULL,
	session_data        TEXT NOT NULL,
	PRIMARY KEY (user_id, version, room_id, session_id)
);

-- adminapi/reports: events and rooms reported by users, for server admins.
-- event_id is NULL for a report about a whole room.
CREATE TABLE content_reports (
	report_id  INTEGER PRIMARY KEY AUTOINCREMENT, -- only: sqlite
	report_id  BIGSERIAL PRIMARY KEY, -- only: postgres
	room_id    TEXT NOT NULL,
	event_id   TEXT,
	reporter   TEXT NOT NULL,
	reason     TEXT NOT NULL DEFAULT '',
	score      BIGINT,
	created_ts BIGINT NOT NULL
);
CREATE INDEX content_reports_room ON content_reports (room_id, report_id);
