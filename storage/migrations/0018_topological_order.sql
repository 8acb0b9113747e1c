-- roomserver: history in topological order. /messages and /context page by
-- (topo, pos): an event's topological depth, then its stream position, so
-- that events received late from other servers (backfilled history, events
-- filling a gap) take their place in the DAG instead of looking newest.
--
-- topo is computed by the roomserver when it stores an event (see
-- topoDepth in roomserver/tables.go): one more than the highest topo of its
-- prev_events in the timeline, and the event's own depth only where some
-- prev_event is not in the timeline. Existing rows take their depth field:
-- every timeline event so far was written with depth one more than its
-- prev_events' highest, which is the same number.
ALTER TABLE events ADD COLUMN topo BIGINT NOT NULL DEFAULT 0;
UPDATE events SET topo = depth;
CREATE INDEX events_room_topo ON events (room_id, topo, pos);

-- The DAG's edges: one row per prev_event of every timeline event, written
-- in the transaction that stores the event. The key serves the room's
-- backward extremities (prev_events not in the timeline: where backfill
-- starts) and an event's children.
CREATE TABLE prev_events (
	room_id       TEXT NOT NULL,
	prev_event_id TEXT NOT NULL,
	event_id      TEXT NOT NULL,
	PRIMARY KEY (room_id, prev_event_id, event_id)
);
-- Room versions 1 and 2 list prev_events as [event_id, hashes] pairs, later ones as IDs.
INSERT INTO prev_events (room_id, prev_event_id, event_id) SELECT e.room_id, CASE WHEN json_typeof(p.value) = 'array' THEN p.value->>0 ELSE p.value#>>'{}' END, e.event_id FROM events e, json_array_elements(replace(e.json, '\u0000', '')::json->'prev_events') p ON CONFLICT DO NOTHING; -- only: postgres
INSERT INTO prev_events (room_id, prev_event_id, event_id) SELECT e.room_id, CASE WHEN p.type = 'array' THEN json_extract(p.value, '$[0]') ELSE p.value END, e.event_id FROM events e, json_each(e.json, '$.prev_events') p WHERE true ON CONFLICT DO NOTHING; -- only: sqlite
