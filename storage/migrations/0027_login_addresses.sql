-- userapi: the client networks each account has signed in from (an IPv4
-- address, or an IPv6 /64), at most 20 per account, newest kept. Failed
-- logins from other networks slow the account down; attempts from these
-- networks are slowed only by their own failures, so the owner can still
-- sign in while someone guesses the password elsewhere.
CREATE TABLE login_addresses (
	user_id TEXT NOT NULL,
	addr    TEXT NOT NULL,
	last_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, addr)
);
