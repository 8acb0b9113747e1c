-- userapi: approvals given on the account page for an operation that
-- needs user-interactive auth from a session of the OAuth 2.0 API (the
-- m.oauth stage of MSC4312; today only "cross_signing", the reset of the
-- cross-signing keys). An approval is used up by the first request it
-- lets through, and lapses at expires_ts.
CREATE TABLE uia_approvals (
	user_id    TEXT NOT NULL,
	op         TEXT NOT NULL,
	expires_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, op)
);

-- userapi: the email address a company identity provider last gave for a
-- linked person, kept as the account's verified email threepid ('' none).
ALTER TABLE oidc_links ADD COLUMN email TEXT NOT NULL DEFAULT '';
