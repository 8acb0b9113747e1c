-- userapi: accounts signed in through a company identity provider
-- (OpenID Connect). One row per provider and subject (the provider's stable
-- "sub" claim), so that a person renamed at the provider keeps the account
-- first made or linked for them.
CREATE TABLE oidc_links (
	provider_id TEXT NOT NULL,
	subject     TEXT NOT NULL,
	user_id     TEXT NOT NULL,
	created_ts  BIGINT NOT NULL,
	PRIMARY KEY (provider_id, subject)
);
CREATE INDEX oidc_links_user ON oidc_links (user_id);
