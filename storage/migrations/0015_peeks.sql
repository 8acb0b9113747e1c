-- syncapi: rooms a device peeks into (world-readable rooms it follows in
-- /sync without joining them, POST /peek). start_pos is the events position
-- the peek started at; pos its position in the peeks stream, which a sync
-- token carries: the first response past it brings the room whole.
CREATE TABLE peeks (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	room_id   TEXT NOT NULL,
	start_pos BIGINT NOT NULL,
	pos       BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, room_id)
);
