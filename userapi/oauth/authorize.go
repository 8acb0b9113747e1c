package oauth

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/userapi"
)

// Scopes of the Matrix spec (MSC2967), stable and unstable.
const (
	ScopeAPI              = "urn:matrix:client:api:*"
	ScopeAPIUnstable      = "urn:matrix:org.matrix.msc2967.client:api:*"
	ScopeDevice           = "urn:matrix:client:device:"
	ScopeDeviceUnstable   = "urn:matrix:org.matrix.msc2967.client:device:"
	maxStateBytes         = 1024
	maxScopeBytes         = 2048
	maxLoginHintBytes     = 512
	minVerifier, maxVerif = 43, 128
)

// AuthRequest is a checked authorization request.
type AuthRequest struct {
	ClientID      string `json:"c"`
	RedirectURI   string `json:"r"`
	Scope         string `json:"s"`
	State         string `json:"st,omitempty"`
	CodeChallenge string `json:"cc"`
	// ResponseMode is query or fragment.
	ResponseMode string `json:"m"`
	Prompt       string `json:"p,omitempty"`
	LoginHint    string `json:"h,omitempty"`
	// DeviceID is the device of the scope.
	DeviceID string `json:"d"`
}

// ParseScope checks a requested scope: it must grant the client API
// (urn:matrix:client:api:*) and name exactly one device
// (urn:matrix:client:device:<id>), in the stable or the unstable form;
// openid is allowed and has no effect. It returns the device ID.
func ParseScope(scope string) (string, error) {
	if len(scope) > maxScopeBytes {
		return "", oauthErr(ErrInvalidScope, "The scope is too long")
	}
	api, device := false, ""
	for _, tok := range strings.Fields(scope) {
		switch {
		case tok == ScopeAPI || tok == ScopeAPIUnstable:
			api = true
		case tok == "openid":
		case strings.HasPrefix(tok, ScopeDevice) || strings.HasPrefix(tok, ScopeDeviceUnstable):
			id := strings.TrimPrefix(strings.TrimPrefix(tok, ScopeDevice), ScopeDeviceUnstable)
			if device != "" && id != device {
				return "", oauthErr(ErrInvalidScope, "The scope names more than one device")
			}
			if !validDeviceID(id) {
				return "", oauthErr(ErrInvalidScope, "The device ID in the scope must be 1 to %d of the characters A-Z a-z 0-9 - . _ ~", userapi.MaxDeviceIDBytes)
			}
			device = id
		default:
			return "", oauthErr(ErrInvalidScope, "Unknown scope %q", truncate(tok, 100))
		}
	}
	if !api {
		return "", oauthErr(ErrInvalidScope, "The scope must include %s", ScopeAPI)
	}
	if device == "" {
		return "", oauthErr(ErrInvalidScope, "The scope must include %s<device ID>", ScopeDevice)
	}
	return device, nil
}

// validDeviceID: the unreserved characters of RFC 3986, as the spec asks
// servers to accept.
func validDeviceID(id string) bool {
	if id == "" || len(id) > userapi.MaxDeviceIDBytes {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// validPKCE: 43 to 128 unreserved characters, the form of both the
// verifier and its S256 challenge.
func validPKCE(s string) bool {
	if len(s) < minVerifier || len(s) > maxVerif {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// Authorize checks an authorization request (the query of the
// authorization endpoint). An unknown client or a redirect URI the client
// did not register gives an *Error without Redirect: the page shows it.
// Anything else wrong gives an *Error with Redirect: it goes back to the
// client, with the request's state and response mode.
func (s *Service) Authorize(ctx context.Context, q url.Values) (AuthRequest, Client, error) {
	req := AuthRequest{ClientID: q.Get("client_id"), RedirectURI: q.Get("redirect_uri"), Scope: q.Get("scope"), State: q.Get("state"),
		CodeChallenge: q.Get("code_challenge"), ResponseMode: q.Get("response_mode"), Prompt: q.Get("prompt"), LoginHint: q.Get("login_hint")}
	if req.ClientID == "" {
		return req, Client{}, oauthErr(ErrInvalidRequest, "client_id is missing")
	}
	c, ok, err := s.Client(ctx, req.ClientID)
	if err != nil {
		return req, Client{}, err
	}
	if !ok {
		return req, Client{}, oauthErr(ErrInvalidClient, "This client is not registered here; the app should register again")
	}
	if req.RedirectURI == "" || !c.RedirectAllowed(req.RedirectURI) {
		return req, c, oauthErr(ErrInvalidRequest, "The redirect_uri is not one the client registered")
	}
	back := func(code, format string, args ...any) (AuthRequest, Client, error) {
		e := oauthErr(code, format, args...)
		e.Redirect = true
		return req, c, e
	}
	if len(req.State) > maxStateBytes || !storage.StorableText(req.State) {
		req.State = ""
		return back(ErrInvalidRequest, "state is longer than %d bytes", maxStateBytes)
	}
	switch req.ResponseMode {
	case "":
		req.ResponseMode = "query"
	case "query", "fragment":
	default:
		req.ResponseMode = "query"
		return back(ErrInvalidRequest, "response_mode must be query or fragment")
	}
	if rt := q.Get("response_type"); rt != "code" {
		return back(ErrUnsupportedResponseType, "response_type must be code")
	}
	if m := q.Get("code_challenge_method"); req.CodeChallenge == "" || m != "S256" {
		return back(ErrInvalidRequest, "PKCE is required: code_challenge with code_challenge_method S256")
	}
	if !validPKCE(req.CodeChallenge) {
		return back(ErrInvalidRequest, "code_challenge is not a S256 challenge")
	}
	if req.DeviceID, err = ParseScope(req.Scope); err != nil {
		e := err.(*Error)
		e.Redirect = true
		return req, c, e
	}
	if req.Prompt == "none" {
		return back(ErrLoginRequired, "Signing in needs the user")
	}
	if len(req.LoginHint) > maxLoginHintBytes || !storage.StorableText(req.LoginHint) {
		req.LoginHint = ""
	}
	return req, c, nil
}

// ErrorRedirect is where an error of a valid authorization request goes:
// the redirect URI with error, error_description and state.
func ErrorRedirect(req AuthRequest, e *Error) string {
	v := url.Values{"error": {e.Code}, "error_description": {e.Description}}
	if req.State != "" {
		v.Set("state", req.State)
	}
	return withParams(req.RedirectURI, req.ResponseMode, v)
}

// CodeRedirect is where a granted request goes: the redirect URI with
// code and state.
func CodeRedirect(req AuthRequest, code string) string {
	v := url.Values{"code": {code}}
	if req.State != "" {
		v.Set("state", req.State)
	}
	return withParams(req.RedirectURI, req.ResponseMode, v)
}

func withParams(redirectURI, mode string, v url.Values) string {
	u, err := url.Parse(redirectURI)
	if err != nil {
		return redirectURI
	}
	if mode == "fragment" {
		u.Fragment = ""
		u.RawFragment = ""
		return u.String() + "#" + v.Encode()
	}
	q := u.Query()
	for k, vs := range v {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// IssueCode makes the authorization code of a granted request for
// userID: single use, CodeLifetime, stored as its hash.
func (s *Service) IssueCode(ctx context.Context, req AuthRequest, userID string) (string, error) {
	code, err := randomCode()
	if err != nil {
		return "", err
	}
	now := s.now()
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM oauth_codes WHERE expires_ts < $1`, now.UnixMilli()); err != nil {
			return fmt.Errorf("delete expired oauth codes: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO oauth_codes (code_hash, client_id, user_id, redirect_uri, scope, device_id, code_challenge, expires_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, userapi.HashToken(code), req.ClientID, userID, req.RedirectURI, req.Scope, req.DeviceID,
			req.CodeChallenge, now.Add(CodeLifetime).UnixMilli()); err != nil {
			return fmt.Errorf("insert oauth code of %s: %w", userID, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return code, nil
}
