-- userapi/keys: end-to-end encryption keys, the device list stream and the
-- idempotency of to-device sends. (to_device itself is in 0001_core.sql.)

-- a device's identity keys as the device uploaded them, without "unsigned"
CREATE TABLE device_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_json  TEXT NOT NULL,
	ts        BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);

-- one-time keys: each is handed out once, then deleted
CREATE TABLE one_time_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id    TEXT NOT NULL,
	key_json  TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- one fallback key per device and algorithm; claimed when the one-time keys
-- run out, marked used but kept until the device uploads a new one
CREATE TABLE fallback_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id    TEXT NOT NULL,
	key_json  TEXT NOT NULL,
	used      BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (user_id, device_id, algorithm)
);

-- cross-signing keys: key_type is master, self_signing or user_signing
CREATE TABLE cross_signing_keys (
	user_id  TEXT NOT NULL,
	key_type TEXT NOT NULL,
	key_json TEXT NOT NULL,
	ts       BIGINT NOT NULL,
	PRIMARY KEY (user_id, key_type)
);

-- signatures uploaded through /keys/signatures/upload: target_key is a
-- device ID or the unpadded base64 public key of a master key; signer_key is
-- the signing key's ID ("ed25519:...")
CREATE TABLE key_signatures (
	target_user TEXT NOT NULL,
	target_key  TEXT NOT NULL,
	signer_user TEXT NOT NULL,
	signer_key  TEXT NOT NULL,
	signature   TEXT NOT NULL,
	PRIMARY KEY (target_user, target_key, signer_user, signer_key)
);

-- the device list stream: the latest position at which a user's devices or
-- keys changed
CREATE TABLE device_list_changes (
	user_id TEXT PRIMARY KEY,
	pos     BIGINT NOT NULL
);
CREATE INDEX device_list_changes_pos ON device_list_changes (pos);

-- transaction IDs of /sendToDevice already accepted, per sending device
CREATE TABLE to_device_txns (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	txn_id    TEXT NOT NULL,
	ts        BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE INDEX to_device_txns_ts ON to_device_txns (ts);
