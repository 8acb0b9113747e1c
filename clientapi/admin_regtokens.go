package clientapi

import (
	"context"
	"net/http"

	"github.com/haven-chat/haven/adminapi/regtokens"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
)

// regTokenStore keeps registration tokens (adminapi/regtokens).
type regTokenStore interface {
	List(ctx context.Context, valid *bool) ([]regtokens.Token, error)
	Get(ctx context.Context, token string) (regtokens.Token, error)
	Create(ctx context.Context, n regtokens.NewToken) (regtokens.Token, error)
	Update(ctx context.Context, token string, c regtokens.Change) (regtokens.Token, error)
	Delete(ctx context.Context, token string) error
}

// RegistrationTokensArea is the admin API of registration tokens, at
// Synapse's paths; POST /registration_tokens is the same as .../new.
func (a *API) RegistrationTokensArea(store regTokenStore) func() []Route {
	h := regTokenHandlers{store: store}
	const base = adminV1 + "/registration_tokens"
	return func() []Route {
		return []Route{
			{Method: "GET", Path: base, H: h.list, Auth: authAdmin, AuditOp: "registration_tokens.list"},
			{Method: "POST", Path: base, H: h.create, Auth: authAdmin, AuditOp: "registration_token.create"},
			{Method: "POST", Path: base + "/new", H: h.create, Auth: authAdmin, AuditOp: "registration_token.create"},
			{Method: "GET", Path: base + "/{token}", H: h.get, Auth: authAdmin, AuditOp: "registration_token.get"},
			{Method: "PUT", Path: base + "/{token}", H: h.update, Auth: authAdmin, AuditOp: "registration_token.update"},
			{Method: "DELETE", Path: base + "/{token}", H: h.delete, Auth: authAdmin, AuditOp: "registration_token.delete"},
		}
	}
}

type regTokenHandlers struct {
	store regTokenStore
}

func (h regTokenHandlers) list(w http.ResponseWriter, r *http.Request) error {
	valid, err := queryBool(r, "valid")
	if err != nil {
		return err
	}
	list, err := h.store.List(r.Context(), valid)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"registration_tokens": list})
}

// tokenParam is the {token} of a path; a token that cannot exist is unknown.
func tokenParam(r *http.Request) (string, error) {
	t := PathParam(r, "token")
	if regtokens.ValidToken(t) != nil {
		return "", merr.NotFound("No such registration token")
	}
	return t, nil
}

func (h regTokenHandlers) get(w http.ResponseWriter, r *http.Request) error {
	t, err := tokenParam(r)
	if err != nil {
		return err
	}
	tok, err := h.store.Get(r.Context(), t)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, tok)
}

func (h regTokenHandlers) create(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		Token       *string `json:"token"`
		UsesAllowed *int64  `json:"uses_allowed"`
		ExpiryTime  *int64  `json:"expiry_time"`
		Length      *int    `json:"length"`
	}
	if err := httpx.DecodeJSON(r, &b, maxSmallBody); err != nil {
		return err
	}
	n := regtokens.NewToken{UsesAllowed: b.UsesAllowed, ExpiryTime: b.ExpiryTime}
	// A chosen token makes length moot (synadm sends both).
	if b.Token != nil {
		if err := regtokens.ValidToken(*b.Token); err != nil {
			return err
		}
		n.Token = *b.Token
	}
	if b.Length != nil {
		if *b.Length < 1 || *b.Length > regtokens.MaxLength {
			return merr.InvalidParam("length must be between 1 and %d", regtokens.MaxLength)
		}
		if b.Token == nil {
			n.Length = *b.Length
		}
	}
	tok, err := h.store.Create(r.Context(), n)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, tok)
}

func (h regTokenHandlers) update(w http.ResponseWriter, r *http.Request) error {
	t, err := tokenParam(r)
	if err != nil {
		return err
	}
	var b struct {
		UsesAllowed optional[int64] `json:"uses_allowed"`
		ExpiryTime  optional[int64] `json:"expiry_time"`
	}
	if err := httpx.DecodeJSON(r, &b, maxSmallBody); err != nil {
		return err
	}
	if _, err := h.store.Get(r.Context(), t); err != nil {
		return err
	}
	tok, err := h.store.Update(r.Context(), t, regtokens.Change{
		SetUses: b.UsesAllowed.Set, UsesAllowed: b.UsesAllowed.Value,
		SetExpiry: b.ExpiryTime.Set, ExpiryTime: b.ExpiryTime.Value,
	})
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, tok)
}

func (h regTokenHandlers) delete(w http.ResponseWriter, r *http.Request) error {
	t, err := tokenParam(r)
	if err != nil {
		return err
	}
	if err := h.store.Delete(r.Context(), t); err != nil {
		return err
	}
	return httpx.OK(w)
}
