-- internal/audit: what was done to accounts, devices, rooms and the server,
-- and by whom (logins and their failures, admin actions, devices added,
-- password and second-factor changes), kept for audit.retention_days and
-- searched by user, action and time.
CREATE TABLE audit_log (
	audit_id  INTEGER PRIMARY KEY AUTOINCREMENT, -- only: sqlite
	audit_id  BIGSERIAL PRIMARY KEY, -- only: postgres
	ts        BIGINT NOT NULL,
	action    TEXT NOT NULL,
	actor     TEXT NOT NULL DEFAULT '',
	target    TEXT NOT NULL DEFAULT '',
	addr      TEXT NOT NULL DEFAULT '',
	ok        BOOLEAN NOT NULL,
	detail    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_ts ON audit_log (ts);
CREATE INDEX audit_log_actor ON audit_log (actor, ts);
CREATE INDEX audit_log_target ON audit_log (target, ts);
