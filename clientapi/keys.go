package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/keys"
)

// keysService is end-to-end encryption's server side (userapi/keys), plus
// /keys/changes, which the sync engine answers.
type keysService interface {
	Upload(ctx context.Context, userID, deviceID string, req keys.UploadRequest) (map[string]int, error)
	// Query waits at most timeout (0: its default) for other servers.
	Query(ctx context.Context, requester string, want map[string][]string, timeout time.Duration) (*keys.QueryResponse, error)
	// ClaimKeys also asks other servers, each for at most timeout.
	ClaimKeys(ctx context.Context, want map[string]map[string]string, timeout time.Duration) (*keys.ClaimResponse, error)
	// UploadSigningKeys returns keys.ErrAuthNeeded when, not authed, the
	// upload needs user-interactive auth.
	UploadSigningKeys(ctx context.Context, userID string, req keys.SigningKeys, authed bool) error
	UploadSignatures(ctx context.Context, userID string, req map[string]map[string]json.RawMessage) (map[string]map[string]json.RawMessage, error)
	SendToDevice(ctx context.Context, sender, senderDevice, evType, txnID string, messages map[string]map[string]json.RawMessage) error
	KeyChanges(ctx context.Context, userID, from, to string) (changed, left []string, err error)
}

// Body limits of the key endpoints (the server-wide max_request_bytes
// still applies): uploads carry up to MaxOneTimeKeysPerUpload keys, claims
// and to-device sends fan out to whole rooms.
const (
	keysUploadBody  = 1 << 20
	keysQueryBody   = 1 << 20
	keysClaimBody   = 2 << 20
	keysSigningBody = 64 << 10
	keysSigsBody    = 1 << 20
	toDeviceBody    = 16 << 20
)

// KeysArea is end-to-end encryption: /keys/* and /sendToDevice.
func (a *API) KeysArea(svc keysService) func() []Route {
	h := &keysHandlers{svc: svc, checkUIA: func(ctx context.Context, req userapi.UIARequest) error {
		if a.Users == nil {
			return merr.Forbidden("Authentication is not available")
		}
		return a.Users.CheckUIA(ctx, req)
	}}
	return func() []Route {
		return []Route{
			{Method: "POST", Path: v3 + "/keys/upload", H: h.upload, Auth: authUser},
			{Method: "POST", Path: v3 + "/keys/upload/{deviceId}", H: h.upload, Auth: authUser},
			{Method: "POST", Path: v3 + "/keys/query", H: h.query, Auth: authUser},
			{Method: "POST", Path: v3 + "/keys/claim", H: h.claim, Auth: authUser},
			{Method: "GET", Path: v3 + "/keys/changes", H: h.changes, Auth: authUser},
			{Method: "POST", Path: v3 + "/keys/device_signing/upload", H: uia(h.signingUpload), Auth: authUser},
			{Method: "POST", Path: v3 + "/keys/signatures/upload", H: h.signaturesUpload, Auth: authUser},
			{Method: "PUT", Path: v3 + "/sendToDevice/{eventType}/{txnId}", H: h.sendToDevice, Auth: authUser},
		}
	}
}

type keysHandlers struct {
	svc      keysService
	checkUIA func(ctx context.Context, req userapi.UIARequest) error
}

func (h *keysHandlers) upload(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		DeviceKeys   json.RawMessage            `json:"device_keys"`
		OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
		// The name fallback keys had before spec v1.2 (MSC2732).
		FallbackKeysMSC map[string]json.RawMessage `json:"org.matrix.msc2732.fallback_keys"`
	}
	if err := httpx.DecodeJSON(r, &req, keysUploadBody); err != nil {
		return err
	}
	d := DeviceFrom(r)
	if id := PathParam(r, "deviceId"); id != "" && id != d.DeviceID {
		return merr.InvalidParam("The device in the path must be the device of the access token")
	}
	fallback := req.FallbackKeys
	if fallback == nil {
		fallback = req.FallbackKeysMSC
	}
	counts, err := h.svc.Upload(r.Context(), d.UserID, d.DeviceID, keys.UploadRequest{DeviceKeys: req.DeviceKeys, OneTimeKeys: req.OneTimeKeys, FallbackKeys: fallback})
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts})
}

func (h *keysHandlers) query(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    int64               `json:"timeout"`
	}
	if err := httpx.DecodeJSON(r, &req, keysQueryBody); err != nil {
		return err
	}
	if req.DeviceKeys == nil {
		return merr.MissingParam("Missing device_keys")
	}
	if req.Timeout < 0 {
		return merr.InvalidParam("timeout must not be negative")
	}
	// Other servers are waited for at most a minute, whatever is asked.
	timeout := time.Duration(min(req.Timeout, 60_000)) * time.Millisecond
	resp, err := h.svc.Query(r.Context(), DeviceFrom(r).UserID, req.DeviceKeys, timeout)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}

func (h *keysHandlers) claim(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		// Timeout is the wait for other servers in milliseconds (10 s).
		Timeout *int64 `json:"timeout"`
	}
	if err := httpx.DecodeJSON(r, &req, keysClaimBody); err != nil {
		return err
	}
	if req.OneTimeKeys == nil {
		return merr.MissingParam("Missing one_time_keys")
	}
	resp, err := h.svc.ClaimKeys(r.Context(), req.OneTimeKeys, keys.ClaimTimeout(req.Timeout))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, resp)
}

func (h *keysHandlers) changes(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	from := q.Get("from")
	if from == "" {
		return merr.MissingParam("Missing from")
	}
	changed, left, err := h.svc.KeyChanges(r.Context(), DeviceFrom(r).UserID, from, q.Get("to"))
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"changed": changed, "left": left})
}

func (h *keysHandlers) signingUpload(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Auth        json.RawMessage `json:"auth"`
		Master      json.RawMessage `json:"master_key"`
		SelfSigning json.RawMessage `json:"self_signing_key"`
		UserSigning json.RawMessage `json:"user_signing_key"`
	}
	if err := httpx.DecodeJSON(r, &req, keysSigningBody); err != nil {
		return err
	}
	d := DeviceFrom(r)
	ctx := withAddr(r)
	sk := keys.SigningKeys{Master: req.Master, SelfSigning: req.SelfSigning, UserSigning: req.UserSigning}
	// No auth for a first upload or an identical retry (spec v1.11);
	// replacing keys needs the password.
	err := h.svc.UploadSigningKeys(ctx, d.UserID, sk, false)
	if errors.Is(err, keys.ErrAuthNeeded) {
		if err := h.checkUIA(ctx, userapi.UIARequest{Op: userapi.OpCrossSigning, UserID: d.UserID, DeviceID: d.DeviceID, Flows: userapi.PasswordFlows(), Auth: req.Auth}); err != nil {
			return err
		}
		err = h.svc.UploadSigningKeys(ctx, d.UserID, sk, true)
	}
	if err != nil {
		return err
	}
	return httpx.OK(w)
}

func (h *keysHandlers) signaturesUpload(w http.ResponseWriter, r *http.Request) error {
	var req map[string]map[string]json.RawMessage
	if err := httpx.DecodeJSON(r, &req, keysSigsBody); err != nil {
		return err
	}
	failures, err := h.svc.UploadSignatures(r.Context(), DeviceFrom(r).UserID, req)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"failures": failures})
}

func (h *keysHandlers) sendToDevice(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := httpx.DecodeJSON(r, &req, toDeviceBody); err != nil {
		return err
	}
	if req.Messages == nil {
		return merr.MissingParam("Missing messages")
	}
	d := DeviceFrom(r)
	if err := h.svc.SendToDevice(r.Context(), d.UserID, d.DeviceID, PathParam(r, "eventType"), PathParam(r, "txnId"), req.Messages); err != nil {
		return err
	}
	return httpx.OK(w)
}
