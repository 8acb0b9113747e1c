-- userapi/keys: the m.direct_to_device EDUs of other servers already
-- delivered to our devices, by origin server and message_id, so that a
-- transaction the origin sends again (after a crash or a lost answer) is
-- delivered once. A row is written in the transaction that queues the
-- messages; rows older than seven days are deleted.
CREATE TABLE to_device_inbound (
	origin     TEXT NOT NULL,
	message_id TEXT NOT NULL,
	ts         BIGINT NOT NULL,
	PRIMARY KEY (origin, message_id)
);
CREATE INDEX to_device_inbound_ts ON to_device_inbound (ts);
