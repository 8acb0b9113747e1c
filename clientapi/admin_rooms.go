package clientapi

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/haven-chat/haven/adminapi/rooms"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/userapi"
)

// adminRoomReader is what the admin room API reads and changes in the
// roomserver directly.
type adminRoomReader interface {
	AdminRooms(ctx context.Context, roomID string) ([]roomserver.AdminRoom, error)
	JoinedMembers(ctx context.Context, roomID string) ([]roomserver.Event, error)
	CurrentState(ctx context.Context, roomID string) ([]roomserver.Event, error)
	Blocked(ctx context.Context, roomID string) (bool, string, error)
	SetBlocked(ctx context.Context, roomID, adminID string, block bool) error
	MediaInRoom(ctx context.Context, roomID string) ([]string, error)
}

// adminRoomJobs runs shutdowns and purges (adminapi/rooms).
type adminRoomJobs interface {
	Shutdown(ctx context.Context, roomID string, req roomserver.ShutdownRequest) (roomserver.ShutdownResult, error)
	StartShutdown(ctx context.Context, roomID string, req roomserver.ShutdownRequest) (string, error)
	DeleteStatus(ctx context.Context, id string) (rooms.DeleteStatus, error)
	RoomDeleteStatuses(ctx context.Context, roomID string) ([]rooms.DeleteStatus, error)
	StartPurge(ctx context.Context, roomID string, p roomserver.PurgePoint) (string, error)
	PurgeStatus(ctx context.Context, id string) (rooms.PurgeStatus, error)
}

// clientEventRenderer renders events in the client format (the sync engine).
type clientEventRenderer interface {
	ClientEvents(ctx context.Context, ids []string) (map[string]json.RawMessage, error)
}

// deviceLister counts the devices of the rooms' local members (userapi).
type deviceLister interface {
	Devices(ctx context.Context, userID string) ([]userapi.DeviceInfo, error)
}

const synapseAdmin = "/_synapse/admin"

// AdminRoomsArea is the room half of the Synapse-compatible admin API:
// listing rooms and their details, members and state, shutting rooms down
// (now, or in the background with a status to poll), blocking them, and
// purging history.
func (a *API) AdminRoomsArea(rs adminRoomReader, jobs adminRoomJobs, events clientEventRenderer, devices deviceLister) func() []Route {
	h := &adminRooms{rooms: rs, jobs: jobs, events: events, devices: devices, serverName: a.Cfg.ServerName}
	return func() []Route {
		return []Route{
			{Method: "GET", Path: synapseAdmin + "/v1/rooms", H: h.list, Auth: authAdmin},
			{Method: "GET", Path: synapseAdmin + "/v1/rooms/{roomId}", H: h.details, Auth: authAdmin},
			{Method: "GET", Path: synapseAdmin + "/v1/rooms/{roomId}/members", H: h.members, Auth: authAdmin},
			{Method: "GET", Path: synapseAdmin + "/v1/rooms/{roomId}/state", H: h.state, Auth: authAdmin},
			{Method: "DELETE", Path: synapseAdmin + "/v1/rooms/{roomId}", H: h.deleteNow, Auth: authAdmin},
			{Method: "DELETE", Path: synapseAdmin + "/v2/rooms/{roomId}", H: h.deleteLater, Auth: authAdmin},
			{Method: "GET", Path: synapseAdmin + "/v2/rooms/{roomId}/delete_status", H: h.roomDeleteStatus, Auth: authAdmin},
			{Method: "GET", Path: synapseAdmin + "/v2/rooms/delete_status/{deleteId}", H: h.deleteStatus, Auth: authAdmin},
			{Method: "GET", Path: synapseAdmin + "/v1/rooms/{roomId}/block", H: h.getBlock, Auth: authAdmin},
			{Method: "PUT", Path: synapseAdmin + "/v1/rooms/{roomId}/block", H: h.putBlock, Auth: authAdmin},
			{Method: "POST", Path: synapseAdmin + "/v1/purge_history/{roomId}", H: h.purge, Auth: authAdmin},
			{Method: "POST", Path: synapseAdmin + "/v1/purge_history/{roomId}/{eventId}", H: h.purge, Auth: authAdmin},
			{Method: "GET", Path: synapseAdmin + "/v1/purge_history_status/{purgeId}", H: h.purgeStatus, Auth: authAdmin},
		}
	}
}

type adminRooms struct {
	rooms      adminRoomReader
	jobs       adminRoomJobs
	events     clientEventRenderer
	devices    deviceLister
	serverName string
}

// adminRoomID reads and checks the {roomId} of an admin path.
func adminRoomID(r *http.Request) (string, error) {
	id := PathParam(r, "roomId")
	if len(id) < 2 || len(id) > 255 || id[0] != '!' || !strings.Contains(id, ":") || !storage.StorableText(id) {
		return "", merr.InvalidParam("%q is not a room ID", id)
	}
	return id, nil
}

// pageParams reads ?from (an offset, default 0) and ?limit (1 to 1000,
// default 100).
func pageParams(r *http.Request) (from, limit int, err error) {
	q := r.URL.Query()
	from, limit = 0, 100
	if v := q.Get("from"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, 0, merr.InvalidParam("from must be a whole number, 0 or more")
		}
		from = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return 0, 0, merr.InvalidParam("limit must be between 1 and 1000")
		}
		limit = n
	}
	return from, limit, nil
}

// dirParam reads ?dir: f (the default) or b.
func dirParam(r *http.Request) (backwards bool, err error) {
	switch r.URL.Query().Get("dir") {
	case "", "f":
		return false, nil
	case "b":
		return true, nil
	}
	return false, merr.InvalidParam("dir must be f or b")
}

// roomOrder compares two rooms by one of the admin API's order_by keys.
var roomOrder = map[string]func(a, b *roomserver.AdminRoom) int{
	"name":                 func(a, b *roomserver.AdminRoom) int { return cmpOpt(a.Name, b.Name) },
	"canonical_alias":      func(a, b *roomserver.AdminRoom) int { return cmpOpt(a.CanonicalAlias, b.CanonicalAlias) },
	"joined_members":       func(a, b *roomserver.AdminRoom) int { return cmp.Compare(b.JoinedMembers, a.JoinedMembers) },
	"joined_local_members": func(a, b *roomserver.AdminRoom) int { return cmp.Compare(b.JoinedLocalMembers, a.JoinedLocalMembers) },
	"version":              func(a, b *roomserver.AdminRoom) int { return cmp.Compare(a.Version, b.Version) },
	"creator":              func(a, b *roomserver.AdminRoom) int { return cmp.Compare(a.Creator, b.Creator) },
	"encryption":           func(a, b *roomserver.AdminRoom) int { return cmpOpt(a.Encryption, b.Encryption) },
	"federatable":          func(a, b *roomserver.AdminRoom) int { return cmpBool(a.Federatable, b.Federatable) },
	"public":               func(a, b *roomserver.AdminRoom) int { return cmpBool(a.Public, b.Public) },
	"join_rules":           func(a, b *roomserver.AdminRoom) int { return cmpOpt(a.JoinRules, b.JoinRules) },
	"guest_access":         func(a, b *roomserver.AdminRoom) int { return cmpOpt(a.GuestAccess, b.GuestAccess) },
	"history_visibility":   func(a, b *roomserver.AdminRoom) int { return cmpOpt(a.HistoryVisibility, b.HistoryVisibility) },
	"state_events":         func(a, b *roomserver.AdminRoom) int { return cmp.Compare(b.StateEvents, a.StateEvents) },
}

// Older names admin tools still send.
var roomOrderAliases = map[string]string{"": "name", "alphabetical": "name", "size": "joined_members"}

// cmpOpt orders strings with the missing ones last.
func cmpOpt(a, b *string) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return cmp.Compare(*a, *b)
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

// list answers GET /v1/rooms: ?from, ?limit, ?order_by, ?dir,
// ?search_term (part of the name, canonical alias or room ID). As in
// Synapse, counts sort largest first for dir=f.
func (h *adminRooms) list(w http.ResponseWriter, r *http.Request) error {
	from, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	back, err := dirParam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	by := q.Get("order_by")
	if alias, ok := roomOrderAliases[by]; ok {
		by = alias
	}
	order, ok := roomOrder[by]
	if !ok {
		return merr.InvalidParam("Unknown order_by %q", q.Get("order_by"))
	}
	search := strings.ToLower(q.Get("search_term"))
	if len(search) > 255 || !storage.StorableText(search) {
		return merr.InvalidParam("search_term is too long or not text")
	}
	all, err := h.rooms.AdminRooms(r.Context(), "")
	if err != nil {
		return err
	}
	list := make([]roomserver.AdminRoom, 0, len(all))
	for _, rm := range all {
		if search != "" && !strings.Contains(strings.ToLower(rm.RoomID), search) &&
			(rm.Name == nil || !strings.Contains(strings.ToLower(*rm.Name), search)) &&
			(rm.CanonicalAlias == nil || !strings.Contains(strings.ToLower(*rm.CanonicalAlias), search)) {
			continue
		}
		rm.Topic, rm.Avatar = nil, nil
		list = append(list, rm)
	}
	slices.SortStableFunc(list, func(a, b roomserver.AdminRoom) int {
		c := order(&a, &b)
		if c == 0 {
			c = cmp.Compare(a.RoomID, b.RoomID)
		}
		if back {
			c = -c
		}
		return c
	})
	total := len(list)
	page := list[min(from, total):min(from+limit, total)]
	body := map[string]any{"rooms": page, "offset": from, "total_rooms": total}
	if from+len(page) < total {
		body["next_batch"] = from + len(page)
	}
	if from > 0 {
		body["prev_batch"] = max(0, from-limit)
	}
	return httpx.JSON(w, http.StatusOK, body)
}

// AdminRoomDetails is GET /v1/rooms/{roomId}: the list's fields, the
// topic and avatar, and the local members' device count (also what
// `haven admin rooms` reads of the list and of one room).
type AdminRoomDetails struct {
	roomserver.AdminRoom
	Topic              *string `json:"topic"`
	Avatar             *string `json:"avatar"`
	JoinedLocalDevices int     `json:"joined_local_devices"`
	Forgotten          bool    `json:"forgotten"`
}

func (h *adminRooms) details(w http.ResponseWriter, r *http.Request) error {
	roomID, err := adminRoomID(r)
	if err != nil {
		return err
	}
	list, err := h.rooms.AdminRooms(r.Context(), roomID)
	if err != nil {
		return err
	}
	d := AdminRoomDetails{AdminRoom: list[0], Topic: list[0].Topic, Avatar: list[0].Avatar}
	members, err := h.rooms.JoinedMembers(r.Context(), roomID)
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.StateKey == nil || !strings.HasSuffix(*m.StateKey, ":"+h.serverName) || h.devices == nil {
			continue
		}
		devs, err := h.devices.Devices(r.Context(), *m.StateKey)
		if err != nil {
			return err
		}
		d.JoinedLocalDevices += len(devs)
	}
	return httpx.JSON(w, http.StatusOK, d)
}

// knownRoom answers M_NOT_FOUND for a room this server does not hold.
func (h *adminRooms) knownRoom(ctx context.Context, roomID string) error {
	_, err := h.rooms.AdminRooms(ctx, roomID)
	return err
}

func (h *adminRooms) members(w http.ResponseWriter, r *http.Request) error {
	roomID, err := adminRoomID(r)
	if err != nil {
		return err
	}
	if err := h.knownRoom(r.Context(), roomID); err != nil {
		return err
	}
	evs, err := h.rooms.JoinedMembers(r.Context(), roomID)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(evs))
	for _, e := range evs {
		if e.StateKey != nil {
			ids = append(ids, *e.StateKey)
		}
	}
	slices.Sort(ids)
	return httpx.JSON(w, http.StatusOK, map[string]any{"members": ids, "total": len(ids)})
}

func (h *adminRooms) state(w http.ResponseWriter, r *http.Request) error {
	roomID, err := adminRoomID(r)
	if err != nil {
		return err
	}
	if err := h.knownRoom(r.Context(), roomID); err != nil {
		return err
	}
	evs, err := h.rooms.CurrentState(r.Context(), roomID)
	if err != nil {
		return err
	}
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.EventID
	}
	rendered, err := h.events.ClientEvents(r.Context(), ids)
	if err != nil {
		return err
	}
	out := make([]json.RawMessage, 0, len(ids))
	for _, id := range ids {
		if ev, ok := rendered[id]; ok {
			out = append(out, ev)
		}
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"state": out})
}

// deleteBody is the body of DELETE /v1 and /v2/rooms/{roomId}.
type deleteBody struct {
	NewRoomUserID string `json:"new_room_user_id"`
	RoomName      string `json:"room_name"`
	Message       string `json:"message"`
	Block         bool   `json:"block"`
	Purge         *bool  `json:"purge"`
	ForcePurge    bool   `json:"force_purge"`
}

func (h *adminRooms) shutdownRequest(r *http.Request) (string, roomserver.ShutdownRequest, error) {
	var b deleteBody
	if err := httpx.DecodeJSON(r, &b, 64<<10); err != nil {
		return "", roomserver.ShutdownRequest{}, err
	}
	roomID, err := adminRoomID(r)
	if err != nil {
		return "", roomserver.ShutdownRequest{}, err
	}
	purge := b.Purge == nil || *b.Purge
	return roomID, roomserver.ShutdownRequest{AdminID: DeviceFrom(r).UserID, NewRoomUserID: b.NewRoomUserID,
		RoomName: b.RoomName, Message: b.Message, Block: b.Block, Purge: purge, ForcePurge: b.ForcePurge}, nil
}

func (h *adminRooms) deleteNow(w http.ResponseWriter, r *http.Request) error {
	roomID, req, err := h.shutdownRequest(r)
	if err != nil {
		return err
	}
	res, err := h.jobs.Shutdown(r.Context(), roomID, req)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, res)
}

func (h *adminRooms) deleteLater(w http.ResponseWriter, r *http.Request) error {
	roomID, req, err := h.shutdownRequest(r)
	if err != nil {
		return err
	}
	id, err := h.jobs.StartShutdown(r.Context(), roomID, req)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"delete_id": id})
}

func (h *adminRooms) roomDeleteStatus(w http.ResponseWriter, r *http.Request) error {
	roomID, err := adminRoomID(r)
	if err != nil {
		return err
	}
	list, err := h.jobs.RoomDeleteStatuses(r.Context(), roomID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"results": list})
}

func (h *adminRooms) deleteStatus(w http.ResponseWriter, r *http.Request) error {
	st, err := h.jobs.DeleteStatus(r.Context(), PathParam(r, "deleteId"))
	if err != nil {
		return err
	}
	// The single status has no delete_id of its own in Synapse's answer.
	body := map[string]any{"status": st.Status, "shutdown_room": st.ShutdownRoom}
	if st.Error != "" {
		body["error"] = st.Error
	}
	return httpx.JSON(w, http.StatusOK, body)
}

func (h *adminRooms) getBlock(w http.ResponseWriter, r *http.Request) error {
	roomID, err := adminRoomID(r)
	if err != nil {
		return err
	}
	blocked, by, err := h.rooms.Blocked(r.Context(), roomID)
	if err != nil {
		return err
	}
	body := map[string]any{"block": blocked}
	if blocked {
		body["user_id"] = by
	}
	return httpx.JSON(w, http.StatusOK, body)
}

func (h *adminRooms) putBlock(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		Block *bool `json:"block"`
	}
	if err := httpx.DecodeJSON(r, &b, 4<<10); err != nil {
		return err
	}
	roomID, err := adminRoomID(r)
	if err != nil {
		return err
	}
	if b.Block == nil {
		return merr.MissingParam("block (true or false) is required")
	}
	if err := h.rooms.SetBlocked(r.Context(), roomID, DeviceFrom(r).UserID, *b.Block); err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]bool{"block": *b.Block})
}

// purge answers POST /v1/purge_history/{roomId}[/{eventId}]: the body
// gives purge_up_to_event_id or purge_up_to_ts (milliseconds), and
// delete_local_events.
func (h *adminRooms) purge(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		DeleteLocal bool   `json:"delete_local_events"`
		EventID     string `json:"purge_up_to_event_id"`
		TS          *int64 `json:"purge_up_to_ts"`
	}
	if err := httpx.DecodeJSON(r, &b, 4<<10); err != nil {
		return err
	}
	roomID, err := adminRoomID(r)
	if err != nil {
		return err
	}
	p := roomserver.PurgePoint{EventID: b.EventID, DeleteLocal: b.DeleteLocal}
	if id := PathParam(r, "eventId"); id != "" {
		p.EventID = id
	}
	if p.EventID == "" {
		if b.TS == nil {
			return merr.MissingParam("Give purge_up_to_event_id or purge_up_to_ts")
		}
		if *b.TS <= 0 {
			return merr.InvalidParam("purge_up_to_ts must be a time in milliseconds")
		}
		p.BeforeTS = *b.TS
	}
	id, err := h.jobs.StartPurge(r.Context(), roomID, p)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"purge_id": id})
}

func (h *adminRooms) purgeStatus(w http.ResponseWriter, r *http.Request) error {
	st, err := h.jobs.PurgeStatus(r.Context(), PathParam(r, "purgeId"))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, st)
}
