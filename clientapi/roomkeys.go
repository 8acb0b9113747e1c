package clientapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi/roomkeys"
)

// roomKeysService is server-side key backup (userapi/roomkeys).
type roomKeysService interface {
	CreateVersion(ctx context.Context, userID, algorithm string, authData json.RawMessage) (string, error)
	Version(ctx context.Context, userID, version string) (roomkeys.VersionInfo, error)
	UpdateVersion(ctx context.Context, userID, version string, upd roomkeys.VersionUpdate) error
	DeleteVersion(ctx context.Context, userID, version string) error
	PutKeys(ctx context.Context, userID, version string, keys roomkeys.Keys) (roomkeys.Counts, error)
	Keys(ctx context.Context, userID, version, roomID, sessionID string) (roomkeys.Keys, error)
	DeleteKeys(ctx context.Context, userID, version, roomID, sessionID string) (roomkeys.Counts, error)
}

// Body limits of the backup endpoints: version metadata is small, key
// uploads come in batches (the server-wide max_request_bytes still applies).
const (
	roomKeysVersionBody = 128 << 10
	roomKeysUploadBody  = 16 << 20
)

// RoomKeysArea is server-side key backup: /room_keys/version and /room_keys/keys.
func (a *API) RoomKeysArea(svc roomKeysService) func() []Route {
	h := &roomKeysHandlers{svc: svc}
	return func() []Route {
		return []Route{
			{Method: "POST", Path: v3 + "/room_keys/version", H: h.createVersion, Auth: authUser},
			{Method: "GET", Path: v3 + "/room_keys/version", H: h.getVersion, Auth: authUser},
			{Method: "GET", Path: v3 + "/room_keys/version/{version}", H: h.getVersion, Auth: authUser},
			{Method: "PUT", Path: v3 + "/room_keys/version/{version}", H: h.putVersion, Auth: authUser},
			{Method: "DELETE", Path: v3 + "/room_keys/version/{version}", H: h.deleteVersion, Auth: authUser},
			{Method: "GET", Path: v3 + "/room_keys/keys", H: h.getKeys, Auth: authUser},
			{Method: "PUT", Path: v3 + "/room_keys/keys", H: h.putKeys, Auth: authUser},
			{Method: "DELETE", Path: v3 + "/room_keys/keys", H: h.deleteKeys, Auth: authUser},
			{Method: "GET", Path: v3 + "/room_keys/keys/{roomId}", H: h.getKeys, Auth: authUser},
			{Method: "PUT", Path: v3 + "/room_keys/keys/{roomId}", H: h.putKeys, Auth: authUser},
			{Method: "DELETE", Path: v3 + "/room_keys/keys/{roomId}", H: h.deleteKeys, Auth: authUser},
			{Method: "GET", Path: v3 + "/room_keys/keys/{roomId}/{sessionId}", H: h.getKeys, Auth: authUser},
			{Method: "PUT", Path: v3 + "/room_keys/keys/{roomId}/{sessionId}", H: h.putKeys, Auth: authUser},
			{Method: "DELETE", Path: v3 + "/room_keys/keys/{roomId}/{sessionId}", H: h.deleteKeys, Auth: authUser},
		}
	}
}

type roomKeysHandlers struct{ svc roomKeysService }

func (h *roomKeysHandlers) createVersion(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Algorithm string          `json:"algorithm"`
		AuthData  json.RawMessage `json:"auth_data"`
	}
	if err := httpx.DecodeJSON(r, &req, roomKeysVersionBody); err != nil {
		return err
	}
	v, err := h.svc.CreateVersion(r.Context(), DeviceFrom(r).UserID, req.Algorithm, req.AuthData)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"version": v})
}

func (h *roomKeysHandlers) getVersion(w http.ResponseWriter, r *http.Request) error {
	info, err := h.svc.Version(r.Context(), DeviceFrom(r).UserID, PathParam(r, "version"))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, info)
}

func (h *roomKeysHandlers) putVersion(w http.ResponseWriter, r *http.Request) error {
	var req roomkeys.VersionUpdate
	if err := httpx.DecodeJSON(r, &req, roomKeysVersionBody); err != nil {
		return err
	}
	if err := h.svc.UpdateVersion(r.Context(), DeviceFrom(r).UserID, PathParam(r, "version"), req); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (h *roomKeysHandlers) deleteVersion(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.DeleteVersion(r.Context(), DeviceFrom(r).UserID, PathParam(r, "version")); err != nil {
		return err
	}
	return httpx.OK(w)
}

// keyScope reads the room and session of a keys path (empty when absent) and the version parameter.
func keyScope(r *http.Request) (version, roomID, sessionID string) {
	return r.URL.Query().Get("version"), PathParam(r, "roomId"), PathParam(r, "sessionId")
}

func (h *roomKeysHandlers) putKeys(w http.ResponseWriter, r *http.Request) error {
	version, roomID, sessionID := keyScope(r)
	keys := roomkeys.Keys{}
	switch {
	case sessionID != "":
		var k roomkeys.KeyData
		if err := httpx.DecodeJSON(r, &k, roomKeysUploadBody); err != nil {
			return err
		}
		keys[roomID] = roomkeys.RoomKeys{sessionID: k}
	case roomID != "":
		var body struct {
			Sessions roomkeys.RoomKeys `json:"sessions"`
		}
		if err := httpx.DecodeJSON(r, &body, roomKeysUploadBody); err != nil {
			return err
		}
		if body.Sessions == nil {
			return merr.BadJSON("sessions is required")
		}
		keys[roomID] = body.Sessions
	default:
		var body struct {
			Rooms map[string]struct {
				Sessions roomkeys.RoomKeys `json:"sessions"`
			} `json:"rooms"`
		}
		if err := httpx.DecodeJSON(r, &body, roomKeysUploadBody); err != nil {
			return err
		}
		if body.Rooms == nil {
			return merr.BadJSON("rooms is required")
		}
		for id, room := range body.Rooms {
			keys[id] = room.Sessions
		}
	}
	c, err := h.svc.PutKeys(r.Context(), DeviceFrom(r).UserID, version, keys)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, c)
}

func (h *roomKeysHandlers) getKeys(w http.ResponseWriter, r *http.Request) error {
	version, roomID, sessionID := keyScope(r)
	keys, err := h.svc.Keys(r.Context(), DeviceFrom(r).UserID, version, roomID, sessionID)
	if err != nil {
		return err
	}
	switch {
	case sessionID != "":
		k, ok := keys[roomID][sessionID]
		if !ok {
			return merr.NotFound("No key backed up for this session")
		}
		return httpx.JSON(w, http.StatusOK, k)
	case roomID != "":
		sessions := keys[roomID]
		if sessions == nil {
			sessions = roomkeys.RoomKeys{}
		}
		return httpx.JSON(w, http.StatusOK, map[string]any{"sessions": sessions})
	}
	rooms := make(map[string]any, len(keys))
	for id, sessions := range keys {
		rooms[id] = map[string]any{"sessions": sessions}
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"rooms": rooms})
}

func (h *roomKeysHandlers) deleteKeys(w http.ResponseWriter, r *http.Request) error {
	version, roomID, sessionID := keyScope(r)
	c, err := h.svc.DeleteKeys(r.Context(), DeviceFrom(r).UserID, version, roomID, sessionID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, c)
}
