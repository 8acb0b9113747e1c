-- federationapi/outbound: the events stream position up to which the
-- outbound feed has put the events of our users in the destinations'
-- JetStream queues, so that a restart resumes without losing or repeating
-- events. One row (name 'events').
CREATE TABLE federation_outbound_positions (
	name TEXT PRIMARY KEY,
	pos  BIGINT NOT NULL
);
