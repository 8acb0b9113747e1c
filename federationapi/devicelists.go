package federationapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi/keys"
)

// LocalKeys answers other servers about our users' devices and keys (the
// key service).
type LocalKeys interface {
	LocalUserDevices(ctx context.Context, userID string) (*keys.UserDevices, error)
	LocalQuery(ctx context.Context, want map[string][]string) (*keys.ServerQueryResponse, error)
}

// DeviceListUpdates takes other servers' device list and cross-signing key
// updates (the key service's remote device lists).
type DeviceListUpdates interface {
	DeviceListUpdate(ctx context.Context, origin string, u keys.DeviceListUpdate) error
	SigningKeyUpdate(ctx context.Context, origin string, u keys.SigningKeyUpdate) error
}

// keysQueryBody bounds the body of /user/keys/query.
const keysQueryBody = 1 << 20

// deviceListRoutes mounts the device list and key endpoints.
func (a *API) deviceListRoutes(r chi.Router) {
	h := httpx.Handle
	r.Get("/v1/user/devices/{userId}", h(a.userDevices))
	r.Post("/v1/user/keys/query", h(a.userKeysQuery))
}

// userDevices answers GET /user/devices/{userId} for one of our users.
func (a *API) userDevices(w http.ResponseWriter, r *http.Request) error {
	if a.Keys == nil {
		return merr.Unrecognized("Unrecognized request")
	}
	userID, err := pathParam(r, "userId")
	if err != nil {
		return err
	}
	resp, err := a.Keys.LocalUserDevices(r.Context(), userID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}

// userKeysQuery answers POST /user/keys/query about our users.
func (a *API) userKeysQuery(w http.ResponseWriter, r *http.Request) error {
	if a.Keys == nil {
		return merr.Unrecognized("Unrecognized request")
	}
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httpx.DecodeJSON(r, &req, keysQueryBody); err != nil {
		return err
	}
	if req.DeviceKeys == nil {
		return merr.MissingParam("Missing device_keys")
	}
	resp, err := a.Keys.LocalQuery(r.Context(), req.DeviceKeys)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}

// deviceListEDU takes an m.device_list_update or m.signing_key_update of
// a transaction: only about the origin's own users; a malformed one is
// dropped (EDUs have no per-item answer).
func (a *API) deviceListEDU(ctx context.Context, from, typ string, content json.RawMessage) {
	if a.DeviceLists == nil {
		return
	}
	log := a.Log.WithFields(logrus.Fields{"origin": from, "edu_type": typ})
	var err error
	switch typ {
	case "m.device_list_update":
		var u keys.DeviceListUpdate
		if json.Unmarshal(content, &u) != nil || ids.ServerOf(u.UserID, '@') != from {
			log.Debug("Device list update dropped: malformed or not of the origin's user")
			return
		}
		err = a.DeviceLists.DeviceListUpdate(ctx, from, u)
	case "m.signing_key_update":
		var u keys.SigningKeyUpdate
		if json.Unmarshal(content, &u) != nil || ids.ServerOf(u.UserID, '@') != from {
			log.Debug("Signing key update dropped: malformed or not of the origin's user")
			return
		}
		err = a.DeviceLists.SigningKeyUpdate(ctx, from, u)
	}
	if err != nil {
		if _, ok := merr.As(err); ok {
			log.WithError(err).Debug("Device list EDU dropped")
		} else {
			log.WithError(err).Warn("Device list EDU not stored")
		}
	}
}

// ---- asking other servers (keys.Fetcher) ----

var _ keys.Fetcher = (*Peers)(nil)

// UserDevices asks the user's server for the user's device list. The
// answer is kept as the server wrote it (fclient's typed answer drops a
// device whose keys it cannot parse and re-encodes the others).
func (p *Peers) UserDevices(ctx context.Context, userID string) (*keys.UserDevices, error) {
	server := ids.ServerOf(userID, '@')
	var out keys.UserDevices
	if err := p.signedJSON(ctx, "GET", server, "/_matrix/federation/v1/user/devices/"+url.PathEscape(userID), nil, &out); err != nil {
		return nil, remoteError(server, err)
	}
	return &out, nil
}

// QueryKeys asks server for the keys of some of its users.
func (p *Peers) QueryKeys(ctx context.Context, server string, want map[string][]string) (*keys.ServerQueryResponse, error) {
	body := map[string]map[string][]string{"device_keys": {}}
	for u, devs := range want {
		if devs == nil {
			devs = []string{}
		}
		body["device_keys"][u] = devs
	}
	var out keys.ServerQueryResponse
	if err := p.signedJSON(ctx, "POST", server, "/_matrix/federation/v1/user/keys/query", body, &out); err != nil {
		return nil, remoteError(server, err)
	}
	return &out, nil
}

// ---- telling other servers ----

// OutboundDeviceLists builds the updates other servers are told of (the
// key service).
type OutboundDeviceLists interface {
	OutboundUpdates(ctx context.Context, n keys.DeviceListNotice) ([]keys.DeviceListUpdate, *keys.SigningKeyUpdate, error)
}

// SharingServers names the servers sharing a room with a user (the
// roomserver).
type SharingServers interface {
	ServersSharingWith(ctx context.Context, userID string) ([]string, error)
}

// DeviceListForwarder sends the device list and cross-signing key changes
// of this server's users to the servers sharing a room with them.
type DeviceListForwarder struct {
	ServerName string
	Keys       OutboundDeviceLists
	Rooms      SharingServers
	Queue      EDUQueue
	Log        *logrus.Logger
}

// Start subscribes to the key service's device list notices (topic); the
// returned function stops it.
func (f *DeviceListForwarder) Start(ctx context.Context, bus Subscriber, topic string) (func(), error) {
	return bus.Subscribe(topic, func(data []byte) { f.notice(ctx, data) })
}

func (f *DeviceListForwarder) notice(ctx context.Context, data []byte) {
	var n keys.DeviceListNotice
	if json.Unmarshal(data, &n) != nil || ids.ServerOf(n.UserID, '@') != f.ServerName {
		return
	}
	if len(n.Devices) == 0 && !n.CrossSigning {
		return
	}
	log := f.Log.WithField("user_id", n.UserID)
	servers, err := f.Rooms.ServersSharingWith(ctx, n.UserID)
	if err != nil {
		log.WithError(err).Warn("Device list update not sent")
		return
	}
	dests := servers[:0:0]
	for _, s := range servers {
		if s != f.ServerName {
			dests = append(dests, s)
		}
	}
	if len(dests) == 0 {
		return
	}
	updates, signing, err := f.Keys.OutboundUpdates(ctx, n)
	if err != nil {
		log.WithError(err).Warn("Device list update not sent")
		return
	}
	var edus []gomatrixserverlib.EDU
	for _, u := range updates {
		if raw, err := json.Marshal(u); err == nil {
			edus = append(edus, gomatrixserverlib.EDU{Type: spec.MDeviceListUpdate, Content: raw})
		}
	}
	if signing != nil {
		if raw, err := json.Marshal(signing); err == nil {
			edus = append(edus, gomatrixserverlib.EDU{Type: "m.signing_key_update", Content: raw})
		}
	}
	for _, edu := range edus {
		if err := f.Queue.QueueEDU(ctx, dests, edu); err != nil {
			log.WithError(err).Warn("Device list update not queued")
		}
	}
}
