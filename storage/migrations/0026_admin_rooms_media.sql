-- Admin API, rooms and media (clientapi/admin_rooms.go, admin_media.go).

-- roomserver: rooms an admin has blocked. No local user may join, knock or
-- be invited into a blocked room (the room need not be known here).
CREATE TABLE room_blocks (
	room_id    TEXT PRIMARY KEY,
	blocked_by TEXT NOT NULL,
	created_ts BIGINT NOT NULL
);

-- mediaapi: quarantined media is kept but never served (404 M_NOT_FOUND);
-- quarantined_by is the admin who quarantined it ('' when it is not).
ALTER TABLE media ADD COLUMN quarantined_by TEXT NOT NULL DEFAULT '';
