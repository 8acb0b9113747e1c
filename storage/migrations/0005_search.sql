-- Search, relations and threads (issue 3).
--
-- syncapi reads event_search; the roomserver writes it in the transaction
-- that stores an event (one row per message body, room name or room topic;
-- rowid is the event's position) and deletes the row in the transaction
-- that redacts the event.
--
-- PostgreSQL: a tsvector of the 'simple' configuration (lower-cased words,
-- no stemming and no stop words: every language is treated the same, and
-- prefix queries find "deployment" for "deploy") in a GIN index. The column
-- is named rowid so that both engines take one INSERT and one DELETE text.
-- SQLite: an FTS5 table (unicode61 tokenizer, diacritics folded).
CREATE TABLE event_search (rowid BIGINT PRIMARY KEY, room_id TEXT NOT NULL, field TEXT NOT NULL, body TEXT NOT NULL, vec tsvector GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED); -- only: postgres
CREATE INDEX event_search_vec ON event_search USING GIN (vec); -- only: postgres
CREATE INDEX event_search_room ON event_search (room_id, rowid); -- only: postgres
CREATE VIRTUAL TABLE event_search USING fts5(body, room_id UNINDEXED, field UNINDEXED, tokenize = 'unicode61 remove_diacritics 2'); -- only: sqlite

-- Index what was stored before this migration.
INSERT INTO event_search (rowid, room_id, field, body) SELECT pos, room_id, 'content.body', replace(json, '\u0000', '')::json->'content'->>'body' FROM events WHERE type = 'm.room.message' AND state_key IS NULL AND redacted_by IS NULL AND json_typeof(replace(json, '\u0000', '')::json->'content'->'body') = 'string'; -- only: postgres
INSERT INTO event_search (rowid, room_id, field, body) SELECT pos, room_id, 'content.name', replace(json, '\u0000', '')::json->'content'->>'name' FROM events WHERE type = 'm.room.name' AND state_key = '' AND redacted_by IS NULL AND json_typeof(replace(json, '\u0000', '')::json->'content'->'name') = 'string'; -- only: postgres
INSERT INTO event_search (rowid, room_id, field, body) SELECT pos, room_id, 'content.topic', replace(json, '\u0000', '')::json->'content'->>'topic' FROM events WHERE type = 'm.room.topic' AND state_key = '' AND redacted_by IS NULL AND json_typeof(replace(json, '\u0000', '')::json->'content'->'topic') = 'string'; -- only: postgres
INSERT INTO event_search (rowid, room_id, field, body) SELECT pos, room_id, 'content.body', json_extract(json, '$.content.body') FROM events WHERE type = 'm.room.message' AND state_key IS NULL AND redacted_by IS NULL AND json_type(json, '$.content.body') = 'text'; -- only: sqlite
INSERT INTO event_search (rowid, room_id, field, body) SELECT pos, room_id, 'content.name', json_extract(json, '$.content.name') FROM events WHERE type = 'm.room.name' AND state_key = '' AND redacted_by IS NULL AND json_type(json, '$.content.name') = 'text'; -- only: sqlite
INSERT INTO event_search (rowid, room_id, field, body) SELECT pos, room_id, 'content.topic', json_extract(json, '$.content.topic') FROM events WHERE type = 'm.room.topic' AND state_key = '' AND redacted_by IS NULL AND json_type(json, '$.content.topic') = 'text'; -- only: sqlite

-- roomserver's events, read by /threads: the thread roots of a room by
-- their latest reply.
CREATE INDEX events_room_rel ON events (room_id, rel_type, pos) WHERE rel_type IS NOT NULL;
