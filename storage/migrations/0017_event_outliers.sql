-- roomserver: events of a room that are not in its timeline. An outlier is
-- known by its ID alone (an auth-chain event, an invite stub from another
-- server); a rejected event failed the auth rules and is kept only so that
-- it is refused again without work; a soft-failed event passed the auth
-- rules at its place in the DAG but not against the room's current state:
-- it is never shown to clients and never a forward extremity, but later
-- events may build on it (snapshot_id is the state before it). None has a
-- stream position, none is served to clients.
CREATE TABLE event_outliers (
	event_id    TEXT PRIMARY KEY,
	room_id     TEXT NOT NULL,
	status      TEXT NOT NULL,
	reason      TEXT NOT NULL DEFAULT '',
	snapshot_id BIGINT NOT NULL DEFAULT 0,
	json        TEXT NOT NULL
);
CREATE INDEX event_outliers_room ON event_outliers (room_id);
