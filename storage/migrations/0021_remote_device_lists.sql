-- userapi/keys: the device lists and cross-signing keys of other servers'
-- users who share a room with ours ("tracked" users), kept up to date by
-- their servers' m.device_list_update and m.signing_key_update EDUs.

-- one row per tracked user: stream_id is the highest update of the user's
-- server applied (0 when the list came from /user/keys/query, which names
-- none); stale marks a list with a gap, refetched before it is trusted
CREATE TABLE remote_device_lists (
	user_id   TEXT PRIMARY KEY,
	stream_id BIGINT NOT NULL,
	stale     BOOLEAN NOT NULL DEFAULT FALSE,
	ts        BIGINT NOT NULL
);

-- a tracked user's devices: key_json as the user's server gave it, without
-- "unsigned" (NULL for a device without keys)
CREATE TABLE remote_device_keys (
	user_id      TEXT NOT NULL,
	device_id    TEXT NOT NULL,
	key_json     TEXT,
	display_name TEXT,
	PRIMARY KEY (user_id, device_id)
);

-- a tracked user's master and self-signing keys
CREATE TABLE remote_cross_signing_keys (
	user_id  TEXT NOT NULL,
	key_type TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, key_type)
);
