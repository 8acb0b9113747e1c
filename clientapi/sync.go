package clientapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/syncapi"
)

// syncService is what the sync-side handlers need.
type syncService interface {
	legacySync
	Sync(ctx context.Context, req syncapi.SyncRequest) (*syncapi.Response, error)
	StartSync(ctx context.Context, req syncapi.SyncRequest) (*syncapi.Response, *syncapi.Waiter, error)
	Messages(ctx context.Context, req syncapi.MessagesRequest) (*syncapi.MessagesResponse, error)
	Context(ctx context.Context, userID, deviceID, roomID, eventID string, limit int, o *syncapi.Opts) (*syncapi.ContextResponse, error)
	Event(ctx context.Context, userID, deviceID, roomID, eventID string) (json.RawMessage, error)
	RoomState(ctx context.Context, userID, roomID string) ([]json.RawMessage, map[[2]string]*syncapi.ClientEvent, error)
	StateEvent(ctx context.Context, userID, roomID, typ, key, format string) (json.RawMessage, error)
	Members(ctx context.Context, userID, roomID, at, membership, notMembership string) ([]json.RawMessage, error)
	JoinedMembers(ctx context.Context, userID, roomID string) (map[string]syncapi.JoinedMember, error)
	JoinedRooms(ctx context.Context, userID string) []string
	// Waiting is the number of /syncs waiting.
	Waiting() int
	SetTyping(ctx context.Context, userID, roomID string, typing bool, timeout time.Duration) error
	SetReceipt(ctx context.Context, userID, roomID, rtype, eventID, threadID string) error
	SetPresence(ctx context.Context, userID, presence string, statusMsg *string) error
	Presence(ctx context.Context, viewer, userID string) (map[string]any, error)
}

// filterSource loads stored filters.
type filterSource interface {
	GetFilter(ctx context.Context, userID, filterID string) ([]byte, error)
}

// accountDataWriter stores room account data (m.fully_read).
type accountDataWriter interface {
	SetAccountData(ctx context.Context, userID, roomID, dataType string, content json.RawMessage) error
}

func (a *API) syncRoutes() []Route {
	return []Route{
		{Method: "GET", Path: v3 + "/sync", H: a.sync, Auth: authUser},
		{Method: "GET", Path: v3 + "/rooms/{roomId}/messages", H: a.messages, Auth: authUser},
		{Method: "GET", Path: v3 + "/rooms/{roomId}/context/{eventId}", H: a.context, Auth: authUser},
		{Method: "GET", Path: v3 + "/rooms/{roomId}/event/{eventId}", H: a.event, Auth: authUser},
		{Method: "GET", Path: v3 + "/rooms/{roomId}/state", H: a.roomState, Auth: authUser},
		{Method: "GET", Path: v3 + "/rooms/{roomId}/state/{eventType}", H: a.stateEvent, Auth: authUser},
		{Method: "GET", Path: v3 + "/rooms/{roomId}/state/{eventType}/", H: a.stateEvent, Auth: authUser},
		{Method: "GET", Path: v3 + "/rooms/{roomId}/state/{eventType}/{stateKey}", H: a.stateEvent, Auth: authUser},
		{Method: "GET", Path: v3 + "/rooms/{roomId}/members", H: a.members, Auth: authUser},
		{Method: "GET", Path: v3 + "/rooms/{roomId}/joined_members", H: a.joinedMembers, Auth: authUser},
		{Method: "GET", Path: v3 + "/joined_rooms", H: a.joinedRooms, Auth: authUser},
		{Method: "PUT", Path: v3 + "/rooms/{roomId}/typing/{userId}", H: a.typing, Auth: authUser},
		{Method: "POST", Path: v3 + "/rooms/{roomId}/receipt/{receiptType}/{eventId}", H: a.receipt, Auth: authUser},
		{Method: "POST", Path: v3 + "/rooms/{roomId}/read_markers", H: a.readMarkers, Auth: authUser},
		{Method: "GET", Path: v3 + "/presence/{userId}/status", H: a.getPresence, Auth: authUser},
		{Method: "PUT", Path: v3 + "/presence/{userId}/status", H: a.putPresence, Auth: authUser},
	}
}

func intParam(r *http.Request, name string, def int) (int, error) {
	return intValue(r.URL.Query(), name, def)
}

// intValue reads a non-negative integer query parameter.
func intValue(q url.Values, name string, def int) (int, error) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, merr.InvalidParam("%s must be a non-negative integer", name)
	}
	return n, nil
}

func (a *API) sync(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	timeout, err := intValue(q, "timeout", 0)
	if err != nil {
		return err
	}
	opts, err := a.syncOpts(r, q.Get("filter"))
	if err != nil {
		return err
	}
	d := DeviceFrom(r)
	fullState := q.Get("full_state") == "true"
	resp, waiter, err := a.Sync.StartSync(r.Context(), syncapi.SyncRequest{
		UserID: d.UserID, DeviceID: d.DeviceID, Since: q.Get("since"), Timeout: time.Duration(timeout) * time.Millisecond,
		FullState: fullState, SetPresence: q.Get("set_presence"), Opts: opts,
	})
	if err != nil {
		return err
	}
	if waiter == nil {
		return writeSync(w, resp)
	}
	// Nothing to say yet. With many waiting, park the connection: while it
	// waits, the request holds no goroutine and none of the HTTP server's
	// buffers. With few, wait on this goroutine (less CPU per answer).
	ri := httpx.Info(r.Context())
	var parked *httpx.Parked
	if a.Sync.Waiting() > a.ParkAbove {
		// A request that cannot be parked (nil Handoff, HTTP/2, shutdown)
		// waits in place.
		parked, _ = a.Handoff.Park(w, r, waiter.Cancel)
	}
	if parked == nil {
		// Waiting is not work: let another connection have this one's slot.
		httpx.ReleaseSlot(r.Context())
		resp, err := waiter.Wait(r.Context())
		if err != nil {
			return err
		}
		return writeSync(w, resp)
	}
	if ri != nil {
		ri.Parked = true
	}
	ctx := context.WithoutCancel(r.Context())
	waiter.Park(ctx, func(resp *syncapi.Response, err error) {
		status, body := parkedReply(ctx, err, func() ([]byte, error) { return resp.AppendJSON(nil), nil })
		_ = parked.Answer(status, body)
		ri.Finish(status)
	})
	return nil
}

func writeSync(w http.ResponseWriter, resp *syncapi.Response) error {
	bp := syncBuffers.Get().(*[]byte)
	body := resp.AppendJSON((*bp)[:0])
	err := httpx.RawJSON(w, http.StatusOK, body)
	if cap(body) <= 1<<20 {
		*bp = body
		syncBuffers.Put(bp)
	}
	return err
}

// syncBuffers recycles the buffers /sync answers are written into.
var syncBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

func (a *API) messages(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := intParam(r, "limit", 10)
	if err != nil {
		return err
	}
	opts, err := roomEventOpts(r)
	if err != nil {
		return err
	}
	d := DeviceFrom(r)
	// dir (required, b or f) is checked by the sync engine once it knows
	// the user may read the room.
	resp, err := a.Sync.Messages(r.Context(), syncapi.MessagesRequest{UserID: d.UserID, DeviceID: d.DeviceID, RoomID: PathParam(r, "roomId"),
		From: q.Get("from"), To: q.Get("to"), Dir: q.Get("dir"), Limit: limit, Opts: opts})
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}

func (a *API) context(w http.ResponseWriter, r *http.Request) error {
	limit, err := intParam(r, "limit", 10)
	if err != nil {
		return err
	}
	opts, err := roomEventOpts(r)
	if err != nil {
		return err
	}
	d := DeviceFrom(r)
	resp, err := a.Sync.Context(r.Context(), d.UserID, d.DeviceID, PathParam(r, "roomId"), PathParam(r, "eventId"), limit, opts)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}

func (a *API) event(w http.ResponseWriter, r *http.Request) error {
	d := DeviceFrom(r)
	ev, err := a.Sync.Event(r.Context(), d.UserID, d.DeviceID, PathParam(r, "roomId"), PathParam(r, "eventId"))
	if err != nil {
		return err
	}
	return httpx.RawJSON(w, http.StatusOK, ev)
}

func (a *API) roomState(w http.ResponseWriter, r *http.Request) error {
	evs, _, err := a.Sync.RoomState(r.Context(), DeviceFrom(r).UserID, PathParam(r, "roomId"))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, evs)
}

func (a *API) stateEvent(w http.ResponseWriter, r *http.Request) error {
	content, err := a.Sync.StateEvent(r.Context(), DeviceFrom(r).UserID, PathParam(r, "roomId"), PathParam(r, "eventType"), PathParam(r, "stateKey"), r.URL.Query().Get("format"))
	if err != nil {
		return err
	}
	return httpx.RawJSON(w, http.StatusOK, content)
}

func (a *API) members(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	evs, err := a.Sync.Members(r.Context(), DeviceFrom(r).UserID, PathParam(r, "roomId"), q.Get("at"), q.Get("membership"), q.Get("not_membership"))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"chunk": evs})
}

func (a *API) joinedMembers(w http.ResponseWriter, r *http.Request) error {
	m, err := a.Sync.JoinedMembers(r.Context(), DeviceFrom(r).UserID, PathParam(r, "roomId"))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"joined": m})
}

func (a *API) joinedRooms(w http.ResponseWriter, r *http.Request) error {
	return httpx.JSON(w, http.StatusOK, map[string]any{"joined_rooms": a.Sync.JoinedRooms(r.Context(), DeviceFrom(r).UserID)})
}

func (a *API) typing(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		Typing  *bool `json:"typing"`
		Timeout int64 `json:"timeout"`
	}
	if err := httpx.DecodeJSON(r, &b, 4<<10); err != nil {
		return err
	}
	if b.Typing == nil {
		return merr.MissingParam("typing is required")
	}
	d := DeviceFrom(r)
	if PathParam(r, "userId") != d.UserID {
		return merr.Forbidden("You can only set your own typing state")
	}
	if err := a.Sync.SetTyping(r.Context(), d.UserID, PathParam(r, "roomId"), *b.Typing, time.Duration(b.Timeout)*time.Millisecond); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) receipt(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		ThreadID string `json:"thread_id"`
	}
	if err := httpx.DecodeJSON(r, &b, 4<<10); err != nil {
		return err
	}
	d := DeviceFrom(r)
	roomID, eventID, rtype := PathParam(r, "roomId"), PathParam(r, "eventId"), PathParam(r, "receiptType")
	if rtype == "m.fully_read" {
		if b.ThreadID != "" {
			return merr.InvalidParam("m.fully_read cannot be threaded")
		}
		if err := a.setFullyRead(r, roomID, eventID); err != nil {
			return err
		}
		return httpx.OK(w)
	}
	if err := a.Sync.SetReceipt(r.Context(), d.UserID, roomID, rtype, eventID, b.ThreadID); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) setFullyRead(r *http.Request, roomID, eventID string) error {
	d := DeviceFrom(r)
	if _, err := a.Sync.Event(r.Context(), d.UserID, d.DeviceID, roomID, eventID); err != nil {
		return err
	}
	content, _ := json.Marshal(map[string]string{"event_id": eventID})
	return a.AccountData.SetAccountData(r.Context(), d.UserID, roomID, "m.fully_read", content)
}

func (a *API) readMarkers(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		FullyRead   string `json:"m.fully_read"`
		Read        string `json:"m.read"`
		ReadPrivate string `json:"m.read.private"`
	}
	if err := httpx.DecodeJSON(r, &b, 4<<10); err != nil {
		return err
	}
	d := DeviceFrom(r)
	roomID := PathParam(r, "roomId")
	if b.FullyRead != "" {
		if err := a.setFullyRead(r, roomID, b.FullyRead); err != nil {
			return err
		}
	}
	if b.Read != "" {
		if err := a.Sync.SetReceipt(r.Context(), d.UserID, roomID, "m.read", b.Read, ""); err != nil {
			return err
		}
	}
	if b.ReadPrivate != "" {
		if err := a.Sync.SetReceipt(r.Context(), d.UserID, roomID, "m.read.private", b.ReadPrivate, ""); err != nil {
			return err
		}
	}
	return httpx.OK(w)
}

func (a *API) getPresence(w http.ResponseWriter, r *http.Request) error {
	p, err := a.Sync.Presence(r.Context(), DeviceFrom(r).UserID, PathParam(r, "userId"))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, p)
}

func (a *API) putPresence(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := httpx.DecodeJSON(r, &b, 4<<10); err != nil {
		return err
	}
	d := DeviceFrom(r)
	if PathParam(r, "userId") != d.UserID {
		return merr.Forbidden("You can only set your own presence")
	}
	if b.Presence == "" {
		return merr.MissingParam("presence is required")
	}
	if err := a.Sync.SetPresence(r.Context(), d.UserID, b.Presence, b.StatusMsg); err != nil {
		return err
	}
	return httpx.OK(w)
}

// parkedReply is the status and body for a parked long-poll (/sync or
// sliding sync) once its answer is ready: err answered as a handler's
// would be (httpx.ErrorReply), else the encoded response.
func parkedReply(ctx context.Context, err error, encode func() ([]byte, error)) (int, []byte) {
	if err == nil {
		body, encErr := encode()
		if encErr == nil {
			return http.StatusOK, body
		}
		err = fmt.Errorf("encode long-poll answer: %w", encErr)
	}
	return httpx.ErrorReply(ctx, err)
}
