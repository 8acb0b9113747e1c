package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
)

func (a *API) deviceRoutes() []Route {
	return []Route{
		{Method: "GET", Path: v3 + "/devices", H: a.listDevices, Auth: authUser},
		{Method: "GET", Path: v3 + "/devices/{deviceId}", H: a.getDevice, Auth: authUser},
		{Method: "PUT", Path: v3 + "/devices/{deviceId}", H: a.putDevice, Auth: authUser},
		{Method: "DELETE", Path: v3 + "/devices/{deviceId}", H: uia(a.deleteDevice), Auth: authUser},
		{Method: "POST", Path: v3 + "/delete_devices", H: uia(a.deleteDevices), Auth: authUser},
		{Method: "GET", Path: v3 + "/admin/whois/{userId}", H: a.whois, Auth: authUser},
	}
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) error {
	devs, err := a.Users.Devices(r.Context(), DeviceFrom(r).UserID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"devices": devs})
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := a.Users.DeviceByID(r.Context(), DeviceFrom(r).UserID, PathParam(r, "deviceId"))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, d)
}

func (a *API) putDevice(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httpx.DecodeJSON(r, &req, maxSmallBody); err != nil {
		return err
	}
	userID, deviceID := DeviceFrom(r).UserID, PathParam(r, "deviceId")
	if req.DisplayName == nil {
		// Nothing to change; still 404 for a device that does not exist.
		if _, err := a.Users.DeviceByID(r.Context(), userID, deviceID); err != nil {
			return err
		}
		return httpx.OK(w)
	}
	if err := a.Users.SetDeviceName(r.Context(), userID, deviceID, *req.DisplayName); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := httpx.DecodeJSON(r, &req, maxAuthBody); err != nil {
		return err
	}
	dev := DeviceFrom(r)
	ctx := withAddr(r)
	deviceID := PathParam(r, "deviceId")
	// The device is part of the operation: a session begun for one device
	// cannot delete another.
	if err := a.Users.CheckUIA(ctx, userapi.UIARequest{Op: "delete_device " + deviceID, UserID: dev.UserID, Flows: userapi.PasswordFlows(), Auth: req.Auth}); err != nil {
		return err
	}
	if err := a.Users.DeleteDevices(ctx, dev.UserID, []string{deviceID}); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) deleteDevices(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Auth    json.RawMessage `json:"auth"`
		Devices []string        `json:"devices"`
	}
	if err := httpx.DecodeJSON(r, &req, maxAuthBody); err != nil {
		return err
	}
	dev := DeviceFrom(r)
	ctx := withAddr(r)
	// The session keeps the list of the first request that gives one.
	p := struct {
		Devices []string `json:"devices,omitempty"`
	}{req.Devices}
	check := func() error {
		if p.Devices == nil {
			return merr.MissingParam("Missing devices")
		}
		return nil
	}
	err := a.Users.CheckUIA(ctx, userapi.UIARequest{Op: "delete_devices", UserID: dev.UserID, Flows: userapi.PasswordFlows(), Auth: req.Auth, Params: &p, Check: check})
	if err != nil {
		return err
	}
	if err := a.Users.DeleteDevices(ctx, dev.UserID, p.Devices); err != nil {
		return err
	}
	return httpx.OK(w)
}

// whoisConnection is one connection of GET /admin/whois: what Haven keeps
// of a device's last use (its address and time) and the User-Agent of the
// client's last request (written with the last-seen batch).
type whoisConnection struct {
	IP        string `json:"ip,omitempty"`
	LastSeen  int64  `json:"last_seen,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
}

type whoisSession struct {
	Connections []whoisConnection `json:"connections"`
}

type whoisDevice struct {
	Sessions []whoisSession `json:"sessions"`
}

// whois answers for server admins about any local user, and for users
// about themselves: one session per device, with its last connection.
func (a *API) whois(w http.ResponseWriter, r *http.Request) error {
	dev, target := DeviceFrom(r), PathParam(r, "userId")
	if target != dev.UserID && !dev.IsAdmin {
		return merr.Forbidden("You can only look up yourself unless you are a server admin")
	}
	ctx := r.Context()
	if !a.Users.IsLocal(target) {
		return merr.InvalidParam("Only users of this server can be looked up")
	}
	exists, err := a.Users.AccountExists(ctx, target)
	if err != nil {
		return err
	}
	if !exists {
		return merr.NotFound("Unknown user %s", target)
	}
	devs, err := a.Users.Devices(ctx, target)
	if err != nil {
		return err
	}
	agents, err := a.Users.DeviceUserAgents(ctx, target)
	if err != nil {
		return err
	}
	out := make(map[string]whoisDevice, len(devs))
	for _, d := range devs {
		conn := whoisConnection{IP: d.LastSeenIP, LastSeen: d.LastSeenTS, UserAgent: agents[d.DeviceID]}
		out[d.DeviceID] = whoisDevice{Sessions: []whoisSession{{Connections: []whoisConnection{conn}}}}
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"user_id": target, "devices": out})
}
