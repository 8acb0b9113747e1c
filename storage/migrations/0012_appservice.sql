-- appservice: the events stream position each application service has been
-- given up to (its transactions are queued in JetStream up to there), so
-- that a restart resumes without losing or repeating events.
CREATE TABLE appservice_positions (
	service_id TEXT PRIMARY KEY,
	pos        BIGINT NOT NULL
);
