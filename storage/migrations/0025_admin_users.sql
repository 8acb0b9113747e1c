-- adminapi/regtokens: registration tokens (the m.login.registration_token
-- stage of /register), made by admins through the admin API. uses_allowed
-- and expiry_ts NULL mean unlimited; pending counts registrations that
-- passed the stage and are being completed, completed those that were.
CREATE TABLE registration_tokens (
	token        TEXT PRIMARY KEY,
	uses_allowed BIGINT,
	pending      BIGINT NOT NULL DEFAULT 0,
	completed    BIGINT NOT NULL DEFAULT 0,
	expiry_ts    BIGINT,
	created_ts   BIGINT NOT NULL
);

-- userapi: what the admin API shows and sets on an account: its user type
-- (NULL for a regular user; "bot", "support" ...) and whether it was
-- erased when deactivated.
ALTER TABLE accounts ADD COLUMN user_type TEXT;
ALTER TABLE accounts ADD COLUMN erased BOOLEAN NOT NULL DEFAULT FALSE;
