-- internal/serverkey: key rotation. The active key (expired_ts = 0) signs;
-- older keys stay, with the time they stopped signing, for the key server's
-- old_verify_keys. Racing first starts of older versions could leave more
-- than one key behind: only the oldest ever signed, so the others are
-- marked expired before the index allows one active key only.
ALTER TABLE server_keys ADD COLUMN expired_ts BIGINT NOT NULL DEFAULT 0;
UPDATE server_keys SET expired_ts = created_ts
	WHERE key_id <> (SELECT key_id FROM server_keys ORDER BY created_ts ASC, key_id ASC LIMIT 1);
CREATE UNIQUE INDEX server_keys_one_active ON server_keys (expired_ts) WHERE expired_ts = 0;

-- federationapi/keys: other servers' signing keys, as their key servers
-- published them. valid_until_ts is the published value capped at seven
-- days after fetched_ts (the spec's rule for room versions 5 and later);
-- 0 for a key only known from old_verify_keys. expired_ts is 0 for a
-- current key.
CREATE TABLE remote_server_keys (
	server_name    TEXT NOT NULL,
	key_id         TEXT NOT NULL,
	public_key     TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	expired_ts     BIGINT NOT NULL,
	fetched_ts     BIGINT NOT NULL,
	PRIMARY KEY (server_name, key_id)
);

-- federationapi/keys: the latest signed /_matrix/key/v2/server answer of
-- each server, as received, which the notary passes on with its own
-- signature added. valid_until_ts is the published value.
CREATE TABLE remote_server_key_responses (
	server_name    TEXT PRIMARY KEY,
	response       TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	fetched_ts     BIGINT NOT NULL
);
