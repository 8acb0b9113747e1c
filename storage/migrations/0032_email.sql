-- userapi: email addresses bound to accounts (/account/3pid), one owner
-- per address; addresses are stored lower-cased.
CREATE TABLE user_threepids (
	medium       TEXT NOT NULL,
	address      TEXT NOT NULL,
	user_id      TEXT NOT NULL,
	validated_ts BIGINT NOT NULL,
	added_ts     BIGINT NOT NULL,
	PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_user ON user_threepids (user_id);

-- userapi: validation sessions of requestToken (an email sent with a
-- token; only the token's SHA-256 is kept). purpose is "password" (reset)
-- or "add" (binding the address); validated_ts is 0 until the token is
-- submitted. Sessions live one hour.
CREATE TABLE threepid_sessions (
	sid           TEXT PRIMARY KEY,
	client_secret TEXT NOT NULL,
	medium        TEXT NOT NULL,
	address       TEXT NOT NULL,
	purpose       TEXT NOT NULL,
	token_hash    TEXT NOT NULL,
	send_attempt  BIGINT NOT NULL,
	created_ts    BIGINT NOT NULL,
	validated_ts  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX threepid_sessions_secret ON threepid_sessions (client_secret, medium, address, purpose);

-- userapi/push: how far each email pusher has been sent notifications
-- (the notifications stream position), so a restart sends nothing twice.
CREATE TABLE email_pusher_progress (
	user_id  TEXT NOT NULL,
	pushkey  TEXT NOT NULL,
	sent_pos BIGINT NOT NULL,
	PRIMARY KEY (user_id, pushkey)
);
