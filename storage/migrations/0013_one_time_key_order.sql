-- userapi/keys: one-time keys are handed out in the order they were uploaded
-- (spec: keys of one upload are equal; MSC4225). upload_seq numbers a
-- device's uploads: each upload's keys get one more than the highest of the
-- device's keys still stored. Keys stored before this migration are the
-- oldest (0). Claims read the index in (upload_seq, key_id) order.
ALTER TABLE one_time_keys ADD COLUMN upload_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX one_time_keys_order ON one_time_keys (user_id, device_id, algorithm, upload_seq, key_id);
