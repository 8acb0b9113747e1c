-- userapi: the per-account password-guessing slowdown, shared by every
-- Haven process on the database (a guesser spreading attempts over the
-- processes of a scale-out meets one counter). addr is '' for the
-- account's counter of unknown networks, or a network (clientip.Network)
-- the account has signed in from, which has a counter of its own. Rows are
-- forgotten 15 minutes after their last failure.
CREATE TABLE login_failures (
	user_id  TEXT NOT NULL,
	addr     TEXT NOT NULL,
	failures INTEGER NOT NULL,
	last_ts  BIGINT NOT NULL,
	until_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, addr)
);
CREATE INDEX login_failures_last ON login_failures (last_ts);
