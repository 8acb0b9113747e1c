package federationapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/merr"
)

// KeyClaims hands out one-time keys of this server's users to other
// servers (userapi/keys): one-time keys first, then fallback keys, as for
// our own users' claims. Users of other servers are left out.
type KeyClaims interface {
	ClaimForServer(ctx context.Context, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// keyClaimBody bounds a /user/keys/claim request (as the client API's
// /keys/claim).
const keyClaimBody = 2 << 20

// keyClaimRoutes mounts the one-time key claim on the signed routes.
func (a *API) keyClaimRoutes(r chi.Router) {
	r.Post("/v1/user/keys/claim", httpx.Handle(a.claimKeys))
}

// claimKeys answers POST /_matrix/federation/v1/user/keys/claim.
func (a *API) claimKeys(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httpx.DecodeJSON(r, &req, keyClaimBody); err != nil {
		return err
	}
	if req.OneTimeKeys == nil {
		return merr.MissingParam("Missing one_time_keys")
	}
	if a.KeyClaims == nil {
		return merr.Unrecognized("One-time keys are not served here")
	}
	got, err := a.KeyClaims.ClaimForServer(r.Context(), req.OneTimeKeys)
	if err != nil {
		return err
	}
	if got == nil {
		got = map[string]map[string]map[string]json.RawMessage{}
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"one_time_keys": got})
}

// ClaimKeys asks server for one-time keys of its users
// (keys.KeyClaimer). What it answers for other servers' users is left
// out; an error is a Matrix error with the status it answered, or 502.
func (p *Peers) ClaimKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	resp, err := p.fed.ClaimKeys(ctx, p.serverName, spec.ServerName(server), want)
	if err != nil {
		return nil, remoteError(server, err)
	}
	out := make(map[string]map[string]map[string]json.RawMessage, len(resp.OneTimeKeys))
	for u, devs := range resp.OneTimeKeys {
		if ids.ServerOf(u, '@') == server {
			out[u] = devs
		}
	}
	return out, nil
}
