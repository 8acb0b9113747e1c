// Package history serves the Server-Server API's reads of room history:
// /event, /state, /state_ids, /event_auth, /backfill and
// /get_missing_events. Only a server with a user joined to the room gets
// anything of it (403 M_FORBIDDEN otherwise); state and auth chains only
// at an event the server may see; an event it may not see (the history
// visibility rules at that event allow none of its users to see it) is
// served redacted, as Synapse does, so that the DAG stays whole. The
// requesting server is the authenticated origin that the federation
// middleware put in the request's context (package origin).
//
// Tables: none (the roomserver's, read through RoomSource). Goroutines:
// none.
package history
