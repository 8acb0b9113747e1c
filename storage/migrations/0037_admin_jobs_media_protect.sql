-- Admin API: protected media, room deletion and purge jobs that
-- outlive a restart, and devices' user agents.

-- mediaapi: protected media (POST /_synapse/admin/v1/media/protect/{id})
-- is never quarantined and never deleted by the date-based clean-up.
ALTER TABLE media ADD COLUMN safe_from_quarantine BOOLEAN NOT NULL DEFAULT FALSE;

-- adminapi/rooms: the status of each background room deletion (kind
-- 'delete', keyed by delete_id) and history purge (kind 'purge', keyed by
-- purge_id), so admin tools polling them get an answer after a restart.
-- result is the JSON of the deletion's shutdown_room. A running job
-- touches updated_ts every 30 s; one untouched for 2 minutes belonged to a
-- process that ended and is reported failed.
CREATE TABLE admin_room_jobs (
	job_id     TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,
	room_id    TEXT NOT NULL,
	status     TEXT NOT NULL,
	error      TEXT NOT NULL DEFAULT '',
	result     TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL,
	updated_ts BIGINT NOT NULL
);
CREATE INDEX admin_room_jobs_room ON admin_room_jobs (room_id, created_ts);
CREATE INDEX admin_room_jobs_created ON admin_room_jobs (created_ts);

-- userapi: the User-Agent of the client when the device signed in (shown
-- by the admin API's whois).
ALTER TABLE devices ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';
