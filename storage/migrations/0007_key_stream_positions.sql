-- userapi/keys: the highest position each of its streams (to_device,
-- device_lists) has handed out. Delivered to-device rows are deleted, and a
-- device list change may leave no row, so the largest position left in those
-- tables can be below positions clients hold in their sync tokens; a
-- restarted service continues above this one.
CREATE TABLE key_stream_positions (
	stream TEXT PRIMARY KEY,
	pos    BIGINT NOT NULL
);

-- Deleting a device deletes the signatures it made: by signer.
CREATE INDEX key_signatures_signer ON key_signatures (signer_user, signer_key);
