-- roomserver: the full-text index is filled off the commit path, in batches
-- (one FTS segment or GIN insert per batch instead of per message, which
-- was a quarter of the server's CPU per message at 100 messages/s on
-- SQLite). pos is the events position up to which event_search is filled;
-- every event stored before this migration was indexed as it was stored.
CREATE TABLE search_position (
	id  INTEGER PRIMARY KEY,
	pos BIGINT NOT NULL
);
INSERT INTO search_position (id, pos) SELECT 0, COALESCE(MAX(pos), 0) FROM events;
