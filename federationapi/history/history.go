package history

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/federationapi/origin"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
)

// RoomSource is what the handlers read from the roomserver.
type RoomSource interface {
	RoomVersion(ctx context.Context, roomID string) (string, error)
	ServerInRoom(ctx context.Context, roomID, server string) (bool, error)
	CheckServerACL(ctx context.Context, roomID, server string) error
	ServerMaySee(ctx context.Context, server, roomID string, eventIDs []string) (map[string]bool, error)
	FederationEvent(ctx context.Context, eventID string) (roomserver.FederationPDU, error)
	FederationEvents(ctx context.Context, roomID string, eventIDs []string) ([]roomserver.FederationPDU, error)
	StateIDsAtEvent(ctx context.Context, roomID, eventID string) (state, authChain []string, err error)
	StateAtEvent(ctx context.Context, roomID, eventID string) (state, authChain []roomserver.FederationPDU, err error)
	AuthChainIDs(ctx context.Context, roomID, eventID string) ([]string, error)
	BackfillEvents(ctx context.Context, roomID string, from []string, limit int) ([]roomserver.FederationPDU, error)
	MissingEvents(ctx context.Context, roomID string, earliest, latest []string, limit int, minDepth int64) ([]roomserver.FederationPDU, error)
}

var _ RoomSource = (*roomserver.Service)(nil)

// Bounds on one request.
const (
	// MaxBackfill is the most events one /backfill answers with (Synapse
	// asks for 100 at a time and serves no more).
	MaxBackfill = 100
	// MaxMissingEvents is the most events one /get_missing_events answers
	// with; DefaultMissingEvents is the spec's default limit.
	MaxMissingEvents     = 20
	DefaultMissingEvents = 10
	// maxBody bounds a /get_missing_events request body.
	maxBody = 256 << 10
)

// Handlers serve the history reads.
type Handlers struct {
	rooms      RoomSource
	serverName string
	now        func() time.Time
}

// New returns the handlers; serverName is this server's name, the origin
// of the transactions they answer with.
func New(rooms RoomSource, serverName string) *Handlers {
	return &Handlers{rooms: rooms, serverName: serverName, now: time.Now}
}

// Routes mounts the endpoints on r, relative to /_matrix/federation. The
// caller puts the X-Matrix authentication (which sets the origin) in
// front of them.
func (h *Handlers) Routes(r chi.Router) {
	r.Get("/v1/event/{eventId}", httpx.Handle(h.event))
	r.Get("/v1/state/{roomId}", httpx.Handle(h.state))
	r.Get("/v1/state_ids/{roomId}", httpx.Handle(h.stateIDs))
	r.Get("/v1/event_auth/{roomId}/{eventId}", httpx.Handle(h.eventAuth))
	r.Get("/v1/backfill/{roomId}", httpx.Handle(h.backfill))
	r.Post("/v1/get_missing_events/{roomId}", httpx.Handle(h.missingEvents))
}

// requester is the server the request was authenticated as.
func requester(r *http.Request) (string, error) {
	s := origin.From(r.Context())
	if s == "" {
		return "", merr.Unauthorized("Missing federation authentication")
	}
	return s, nil
}

// pathParam reads a path parameter as text (httpx.PathText).
func pathParam(r *http.Request, name string) (string, error) { return httpx.PathText(r, name) }

// inRoom refuses a server that has no user joined to the room, or that the
// room's m.room.server_acl bans (404 for an unknown room).
func (h *Handlers) inRoom(ctx context.Context, roomID, server string) error {
	if err := h.rooms.CheckServerACL(ctx, roomID, server); err != nil {
		return err
	}
	in, err := h.rooms.ServerInRoom(ctx, roomID, server)
	if err != nil {
		return err
	}
	if !in {
		return merr.Forbidden("Server %s is not in room %s", server, roomID)
	}
	return nil
}

// maySee refuses an event the server may not see (404 for one unknown in
// the room).
func (h *Handlers) maySee(ctx context.Context, server, roomID, eventID string) error {
	vis, err := h.rooms.ServerMaySee(ctx, server, roomID, []string{eventID})
	if err != nil {
		return err
	}
	seen, known := vis[eventID]
	if !known {
		return merr.NotFound("Event not found")
	}
	if !seen {
		return merr.Forbidden("Server %s may not see event %s", server, eventID)
	}
	return nil
}

// forServer redacts the events the server may not see.
func (h *Handlers) forServer(ctx context.Context, server, roomID string, evs []roomserver.FederationPDU) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, len(evs))
	if len(evs) == 0 {
		return out, nil
	}
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.EventID
	}
	vis, err := h.rooms.ServerMaySee(ctx, server, roomID, ids)
	if err != nil {
		return nil, err
	}
	var verImpl gomatrixserverlib.IRoomVersion
	for i, e := range evs {
		out[i] = e.JSON
		if vis[e.EventID] {
			continue
		}
		if verImpl == nil {
			v, err := h.rooms.RoomVersion(ctx, roomID)
			if err != nil {
				return nil, err
			}
			if verImpl, err = gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(v)); err != nil {
				return nil, err
			}
		}
		red, err := verImpl.RedactEventJSON(e.JSON)
		if err != nil {
			return nil, err
		}
		out[i] = red
	}
	return out, nil
}

func rawList(evs []roomserver.FederationPDU) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		out[i] = e.JSON
	}
	return out
}

// transaction answers with PDUs in a transaction from this server.
func (h *Handlers) transaction(w http.ResponseWriter, pdus []json.RawMessage) error {
	return httpx.JSON(w, http.StatusOK, struct {
		Origin         string            `json:"origin"`
		OriginServerTS int64             `json:"origin_server_ts"`
		PDUs           []json.RawMessage `json:"pdus"`
	}{h.serverName, h.now().UnixMilli(), pdus})
}

// GET /v1/event/{eventId}
func (h *Handlers) event(w http.ResponseWriter, r *http.Request) error {
	server, err := requester(r)
	if err != nil {
		return err
	}
	eventID, err := pathParam(r, "eventId")
	if err != nil {
		return err
	}
	ctx := r.Context()
	ev, err := h.rooms.FederationEvent(ctx, eventID)
	if err != nil {
		return err
	}
	if err := h.inRoom(ctx, ev.RoomID, server); err != nil {
		return err
	}
	pdus, err := h.forServer(ctx, server, ev.RoomID, []roomserver.FederationPDU{ev})
	if err != nil {
		return err
	}
	return h.transaction(w, pdus)
}

// stateAt reads the checked parameters of /state and /state_ids.
func (h *Handlers) stateAt(r *http.Request) (server, roomID, eventID string, err error) {
	if server, err = requester(r); err != nil {
		return
	}
	if roomID, err = pathParam(r, "roomId"); err != nil {
		return
	}
	q := r.URL.Query()
	if !q.Has("event_id") {
		err = merr.MissingParam("Missing event_id")
		return
	}
	eventID = q.Get("event_id")
	if eventID == "" || !storage.StorableText(eventID) {
		err = merr.InvalidParam("Invalid event_id")
		return
	}
	ctx := r.Context()
	if err = h.inRoom(ctx, roomID, server); err != nil {
		return
	}
	err = h.maySee(ctx, server, roomID, eventID)
	return
}

// GET /v1/state_ids/{roomId}?event_id=
func (h *Handlers) stateIDs(w http.ResponseWriter, r *http.Request) error {
	_, roomID, eventID, err := h.stateAt(r)
	if err != nil {
		return err
	}
	state, chain, err := h.rooms.StateIDsAtEvent(r.Context(), roomID, eventID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, struct {
		PDUIDs       []string `json:"pdu_ids"`
		AuthChainIDs []string `json:"auth_chain_ids"`
	}{nonNil(state), nonNil(chain)})
}

// GET /v1/state/{roomId}?event_id=
func (h *Handlers) state(w http.ResponseWriter, r *http.Request) error {
	_, roomID, eventID, err := h.stateAt(r)
	if err != nil {
		return err
	}
	state, chain, err := h.rooms.StateAtEvent(r.Context(), roomID, eventID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, struct {
		PDUs      []json.RawMessage `json:"pdus"`
		AuthChain []json.RawMessage `json:"auth_chain"`
	}{rawList(state), rawList(chain)})
}

// GET /v1/event_auth/{roomId}/{eventId}
func (h *Handlers) eventAuth(w http.ResponseWriter, r *http.Request) error {
	server, err := requester(r)
	if err != nil {
		return err
	}
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	eventID, err := pathParam(r, "eventId")
	if err != nil {
		return err
	}
	ctx := r.Context()
	if err := h.inRoom(ctx, roomID, server); err != nil {
		return err
	}
	if err := h.maySee(ctx, server, roomID, eventID); err != nil {
		return err
	}
	ids, err := h.rooms.AuthChainIDs(ctx, roomID, eventID)
	if err != nil {
		return err
	}
	chain, err := h.rooms.FederationEvents(ctx, roomID, ids)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, struct {
		AuthChain []json.RawMessage `json:"auth_chain"`
	}{rawList(chain)})
}

// GET /v1/backfill/{roomId}?v=&limit=
func (h *Handlers) backfill(w http.ResponseWriter, r *http.Request) error {
	server, err := requester(r)
	if err != nil {
		return err
	}
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	// v is repeated (what Synapse and gomatrixserverlib send) or one
	// comma-separated list (the spec's form style).
	var from []string
	for _, v := range q["v"] {
		for _, id := range strings.Split(v, ",") {
			if id == "" || !storage.StorableText(id) {
				return merr.InvalidParam("Invalid event ID in v")
			}
			from = append(from, id)
		}
	}
	if len(from) == 0 {
		return merr.MissingParam("Missing v")
	}
	if !q.Has("limit") {
		return merr.MissingParam("Missing limit")
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 1 {
		return merr.InvalidParam("limit must be a positive integer")
	}
	limit = min(limit, MaxBackfill)
	ctx := r.Context()
	if err := h.inRoom(ctx, roomID, server); err != nil {
		return err
	}
	evs, err := h.rooms.BackfillEvents(ctx, roomID, from, limit)
	if err != nil {
		return err
	}
	pdus, err := h.forServer(ctx, server, roomID, evs)
	if err != nil {
		return err
	}
	return h.transaction(w, pdus)
}

type missingEventsRequest struct {
	Limit    *int     `json:"limit"`
	MinDepth *int64   `json:"min_depth"`
	Earliest []string `json:"earliest_events"`
	Latest   []string `json:"latest_events"`
}

// POST /v1/get_missing_events/{roomId}
func (h *Handlers) missingEvents(w http.ResponseWriter, r *http.Request) error {
	server, err := requester(r)
	if err != nil {
		return err
	}
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	var req missingEventsRequest
	if err := httpx.DecodeJSON(r, &req, maxBody); err != nil {
		return err
	}
	if req.Latest == nil {
		return merr.BadJSON("latest_events is required")
	}
	limit := DefaultMissingEvents
	if req.Limit != nil {
		if *req.Limit < 0 {
			return merr.BadJSON("limit must not be negative")
		}
		if *req.Limit > 0 {
			limit = *req.Limit
		}
	}
	limit = min(limit, MaxMissingEvents)
	var minDepth int64
	if req.MinDepth != nil {
		if *req.MinDepth < 0 {
			return merr.BadJSON("min_depth must not be negative")
		}
		minDepth = *req.MinDepth
	}
	ctx := r.Context()
	if err := h.inRoom(ctx, roomID, server); err != nil {
		return err
	}
	evs, err := h.rooms.MissingEvents(ctx, roomID, req.Earliest, req.Latest, limit, minDepth)
	if err != nil {
		return err
	}
	pdus, err := h.forServer(ctx, server, roomID, evs)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, struct {
		Events []json.RawMessage `json:"events"`
	}{pdus})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
