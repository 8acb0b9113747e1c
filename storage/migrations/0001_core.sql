-- Core schema: accounts, devices, rooms, events, state, sync streams.
-- One text for both engines; see storage/migrate.go for the "-- only:" markers.

-- internal: server-wide settings and the signing key
CREATE TABLE server_keys (
	key_id     TEXT PRIMARY KEY,
	seed       BYTEA NOT NULL,
	created_ts BIGINT NOT NULL
);

-- userapi: accounts and devices
CREATE TABLE accounts (
	user_id       TEXT PRIMARY KEY,
	password_hash TEXT NOT NULL,
	is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
	deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
	created_ts    BIGINT NOT NULL
);

CREATE TABLE devices (
	user_id      TEXT NOT NULL,
	device_id    TEXT NOT NULL,
	display_name TEXT,
	token_hash   TEXT NOT NULL UNIQUE,
	created_ts   BIGINT NOT NULL,
	last_seen_ts BIGINT NOT NULL,
	last_seen_ip TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (user_id, device_id)
);

CREATE TABLE profiles (
	user_id     TEXT PRIMARY KEY,
	displayname TEXT,
	avatar_url  TEXT
);

-- room_id is '' for global account data
CREATE TABLE account_data (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	type    TEXT NOT NULL,
	content TEXT NOT NULL,
	pos     BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_pos ON account_data (user_id, pos);

CREATE TABLE filters (
	user_id   TEXT NOT NULL,
	filter_id BIGINT NOT NULL,
	filter    TEXT NOT NULL,
	PRIMARY KEY (user_id, filter_id)
);

-- the user's push rules once they differ from the defaults
CREATE TABLE push_rules (
	user_id TEXT PRIMARY KEY,
	rules   TEXT NOT NULL
);

-- user-interactive auth sessions
CREATE TABLE uia_sessions (
	session_id TEXT PRIMARY KEY,
	user_id    TEXT NOT NULL DEFAULT '',
	data       TEXT NOT NULL,
	created_ts BIGINT NOT NULL
);

-- nonces of shared-secret registration
CREATE TABLE registration_nonces (
	nonce      TEXT PRIMARY KEY,
	created_ts BIGINT NOT NULL
);

-- roomserver: rooms, events, state
CREATE TABLE rooms (
	room_id      TEXT PRIMARY KEY,
	room_version TEXT NOT NULL,
	creator      TEXT NOT NULL,
	created_ts   BIGINT NOT NULL,
	published    BOOLEAN NOT NULL DEFAULT FALSE,
	snapshot_id  BIGINT NOT NULL DEFAULT 0,
	depth        BIGINT NOT NULL DEFAULT 0
);

-- every event of every room; pos is the events stream position
CREATE TABLE events (
	pos              BIGINT PRIMARY KEY,
	event_id         TEXT NOT NULL UNIQUE,
	room_id          TEXT NOT NULL,
	type             TEXT NOT NULL,
	state_key        TEXT,
	sender           TEXT NOT NULL,
	membership       TEXT,
	depth            BIGINT NOT NULL,
	origin_ts        BIGINT NOT NULL,
	snapshot_id      BIGINT NOT NULL,
	relates_to       TEXT,
	rel_type         TEXT,
	redacted_by      TEXT,
	-- the sending device and its transaction ID, for unsigned.transaction_id
	device_id        TEXT,
	txn_id           TEXT,
	json             TEXT NOT NULL
);
CREATE INDEX events_room_pos ON events (room_id, pos);
CREATE INDEX events_room_state ON events (room_id, type, state_key, pos);
CREATE INDEX events_relates ON events (relates_to, rel_type);
-- a device's transaction ID names one event per room, also across restarts
CREATE UNIQUE INDEX events_txn ON events (sender, device_id, room_id, txn_id) WHERE txn_id IS NOT NULL;

-- forward extremities of each room's DAG
CREATE TABLE room_extremities (
	room_id  TEXT NOT NULL,
	event_id TEXT NOT NULL,
	PRIMARY KEY (room_id, event_id)
);

-- current state of each room
CREATE TABLE room_state (
	room_id    TEXT NOT NULL,
	type       TEXT NOT NULL,
	state_key  TEXT NOT NULL,
	event_id   TEXT NOT NULL,
	pos        BIGINT NOT NULL,
	membership TEXT,
	PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX room_state_member ON room_state (state_key, type);

-- state snapshots: a snapshot is its parent plus its own entries; a chain is
-- cut by a full snapshot (parent_id 0) every so often
CREATE TABLE state_snapshots (
	snapshot_id BIGINT PRIMARY KEY,
	room_id     TEXT NOT NULL,
	parent_id   BIGINT NOT NULL,
	chain_len   BIGINT NOT NULL
);

CREATE TABLE state_snapshot_entries (
	snapshot_id BIGINT NOT NULL,
	type        TEXT NOT NULL,
	state_key   TEXT NOT NULL,
	event_id    TEXT NOT NULL,
	PRIMARY KEY (snapshot_id, type, state_key)
);

CREATE TABLE room_aliases (
	alias   TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- rooms a user has forgotten
CREATE TABLE forgotten_rooms (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	PRIMARY KEY (user_id, room_id)
);

-- syncapi: receipts
CREATE TABLE receipts (
	room_id   TEXT NOT NULL,
	rtype     TEXT NOT NULL,
	user_id   TEXT NOT NULL,
	thread_id TEXT NOT NULL,
	event_id  TEXT NOT NULL,
	ts        BIGINT NOT NULL,
	pos       BIGINT NOT NULL,
	PRIMARY KEY (room_id, rtype, user_id, thread_id)
);
CREATE INDEX receipts_pos ON receipts (pos);

-- syncapi: presence
CREATE TABLE presence (
	user_id        TEXT PRIMARY KEY,
	presence       TEXT NOT NULL,
	status_msg     TEXT,
	last_active_ts BIGINT NOT NULL,
	pos            BIGINT NOT NULL
);

-- userapi/keys: to-device messages waiting for their device
CREATE TABLE to_device (
	pos       BIGINT PRIMARY KEY,
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	sender    TEXT NOT NULL,
	type      TEXT NOT NULL,
	content   TEXT NOT NULL
);
CREATE INDEX to_device_target ON to_device (user_id, device_id, pos);
