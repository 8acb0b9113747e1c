-- userapi/push: one row per notifying event instead of one per notified
-- member, and the unread counts as checkpoints.
--
-- The rows of 0004's notifications table were keyed by user: every message
-- into a room of N members wrote N rows scattered over the table's pages,
-- and every receipt and own message updated them again. Those writes were a
-- fifth of the server's CPU at 500 messages/s. The server copies the rows
-- left in notifications into these tables at its first start after this
-- migration, then empties it.

-- The notifications of one event: data holds the notified users and their
-- actions ({"a":[actions...],"h":[highlight...],"u":{"@user:hs":index}}).
CREATE TABLE push_notified (
	pos      BIGINT PRIMARY KEY,
	room_id  TEXT NOT NULL,
	event_id TEXT NOT NULL,
	ts       BIGINT NOT NULL,
	data     TEXT NOT NULL
);
CREATE INDEX push_notified_ts ON push_notified (ts);

-- The unread notifications of a user in a room, as of the evaluated
-- position in push_position (id 0); the receipts position applied is
-- push_position id 1.
CREATE TABLE push_unread (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	data    TEXT NOT NULL,
	PRIMARY KEY (user_id, room_id)
);
