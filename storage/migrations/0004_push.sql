-- userapi/push: notifications, pushers and the position push evaluation has reached.

-- One row per (user, event) that notified the user; pos is the event's
-- position in the events stream. is_read is set by the user's receipts.
CREATE TABLE notifications (
	user_id   TEXT NOT NULL,
	pos       BIGINT NOT NULL,
	room_id   TEXT NOT NULL,
	event_id  TEXT NOT NULL,
	thread_id TEXT NOT NULL DEFAULT '',
	highlight BOOLEAN NOT NULL,
	actions   TEXT NOT NULL,
	ts        BIGINT NOT NULL,
	is_read   BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (user_id, pos)
);
CREATE INDEX notifications_unread ON notifications (user_id, room_id, pos) WHERE NOT is_read;

-- The events position up to which every event has been evaluated and its
-- notifications stored (one row, id 0).
CREATE TABLE push_position (
	id  INTEGER PRIMARY KEY,
	pos BIGINT NOT NULL
);

-- HTTP and email pushers; data is the pusher's data object as given.
CREATE TABLE pushers (
	user_id             TEXT NOT NULL,
	app_id              TEXT NOT NULL,
	pushkey             TEXT NOT NULL,
	kind                TEXT NOT NULL,
	app_display_name    TEXT NOT NULL,
	device_display_name TEXT NOT NULL,
	profile_tag         TEXT NOT NULL DEFAULT '',
	lang                TEXT NOT NULL,
	data                TEXT NOT NULL,
	pushkey_ts          BIGINT NOT NULL,
	device_id           TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers (user_id);
