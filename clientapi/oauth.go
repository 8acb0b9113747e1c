package clientapi

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/haven-chat/haven/clientapi/signin"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/userapi/oauth"
)

// Paths of the OAuth 2.0 API's machine endpoints (the authorization
// endpoint and the consent page are the sign-in page's, clientapi/signin).
const (
	PathOAuthToken        = "/_haven/oauth2/token"
	PathOAuthRegistration = "/_haven/oauth2/registration"
	PathOAuthRevoke       = "/_haven/oauth2/revoke"
	maxOAuthFormBytes     = 16 << 10
)

// oauthService is the OAuth 2.0 API (userapi/oauth.Service).
type oauthService interface {
	Register(ctx context.Context, body []byte) (oauth.Client, error)
	Grant(ctx context.Context, form url.Values, clientAddr string) (oauth.Token, error)
	Revoke(ctx context.Context, form url.Values) error
}

// OAuthArea serves the OAuth 2.0 API of the Matrix spec (v1.15): the
// server metadata (and the unstable paths older clients call), dynamic
// client registration, the token and revocation endpoints, and, through
// the sign-in page, the authorization endpoint and consent. The server
// adds it when config.OAuthOn.
func (a *API) OAuthArea(svc oauthService, p *signin.Page) func() []Route {
	html := func(f http.HandlerFunc) httpx.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) error { f(w, r); return nil }
	}
	h := &oauthHandlers{svc: svc, issuer: a.Cfg.OAuthIssuer()}
	return func() []Route {
		return []Route{
			{Method: "GET", Path: "/_matrix/client/v1/auth_metadata", H: h.metadata, Auth: authNone},
			{Method: "GET", Path: "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", H: h.metadata, Auth: authNone},
			{Method: "GET", Path: "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer", H: h.authIssuer, Auth: authNone},
			{Method: "POST", Path: PathOAuthRegistration, H: h.register, Auth: authNone, Limit: limitRegister},
			{Method: "POST", Path: PathOAuthToken, H: h.token, Auth: authNone, Limit: limitLogin},
			{Method: "POST", Path: PathOAuthRevoke, H: h.revoke, Auth: authNone, Limit: limitLogin},
			{Method: "GET", Path: signin.PathAuthorize, H: html(p.Authorize), Auth: authNone, Limit: limitLogin},
			{Method: "POST", Path: signin.PathConsent, H: html(p.Consent), Auth: authNone, Limit: limitLogin},
		}
	}
}

type oauthHandlers struct {
	svc    oauthService
	issuer string
}

func (h *oauthHandlers) url(path string) string { return strings.TrimSuffix(h.issuer, "/") + path }

// metadata is GET /auth_metadata: the authorization server metadata (RFC
// 8414 as the spec uses it).
func (h *oauthHandlers) metadata(w http.ResponseWriter, r *http.Request) error {
	return httpx.JSON(w, http.StatusOK, map[string]any{
		"issuer":                                     h.issuer,
		"authorization_endpoint":                     h.url(signin.PathAuthorize),
		"token_endpoint":                             h.url(PathOAuthToken),
		"registration_endpoint":                      h.url(PathOAuthRegistration),
		"revocation_endpoint":                        h.url(PathOAuthRevoke),
		"response_types_supported":                   []string{"code"},
		"response_modes_supported":                   []string{"query", "fragment"},
		"grant_types_supported":                      []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":           []string{"S256"},
		"token_endpoint_auth_methods_supported":      []string{"none"},
		"revocation_endpoint_auth_methods_supported": []string{"none"},
		"scopes_supported":                           []string{oauth.ScopeAPI, oauth.ScopeDevice + "*"},
		"account_management_uri":                     h.url(signin.PathAccount),
		"account_management_actions_supported":       signin.AccountActions,
	})
}

// authIssuer is the unstable GET auth_issuer of MSC2965's first form.
func (h *oauthHandlers) authIssuer(w http.ResponseWriter, r *http.Request) error {
	return httpx.JSON(w, http.StatusOK, map[string]string{"issuer": h.issuer})
}

// oauthError writes an OAuth error: 400 with error and error_description
// (429 and 500 stay Matrix errors, from the route's wrapper).
func oauthError(w http.ResponseWriter, err error) error {
	var oe *oauth.Error
	if !errors.As(err, &oe) {
		return err
	}
	w.Header().Set("Pragma", "no-cache")
	return httpx.JSON(w, http.StatusBadRequest, map[string]string{"error": oe.Code, "error_description": oe.Description})
}

// register is dynamic client registration (RFC 7591 as the spec
// restricts it): 201 with the client's ID and the metadata kept.
func (h *oauthHandlers) register(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, oauth.MaxRegistrationBytes+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return oauthError(w, &oauth.Error{Code: oauth.ErrInvalidClientMetadata, Description: "The registration is too large"})
		}
		return err
	}
	c, err := h.svc.Register(r.Context(), body)
	if err != nil {
		return oauthError(w, err)
	}
	return httpx.JSON(w, http.StatusCreated, c)
}

// form reads an application/x-www-form-urlencoded body (the token and
// revocation endpoints), bounded.
func form(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return nil, &oauth.Error{Code: oauth.ErrInvalidRequest, Description: "The body must be application/x-www-form-urlencoded"}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxOAuthFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, &oauth.Error{Code: oauth.ErrInvalidRequest, Description: "The form cannot be read (or is larger than 16 KiB)"}
	}
	return r.PostForm, nil
}

// token is the token endpoint: grant_type authorization_code or
// refresh_token.
func (h *oauthHandlers) token(w http.ResponseWriter, r *http.Request) error {
	f, err := form(w, r)
	if err != nil {
		return oauthError(w, err)
	}
	tok, err := h.svc.Grant(withAddr(r), f, clientAddr(r))
	if err != nil {
		return oauthError(w, err)
	}
	w.Header().Set("Pragma", "no-cache")
	return httpx.JSON(w, http.StatusOK, tok)
}

// revoke is the revocation endpoint (RFC 7009): 200 for a revoked token
// and for an unknown one.
func (h *oauthHandlers) revoke(w http.ResponseWriter, r *http.Request) error {
	f, err := form(w, r)
	if err != nil {
		return oauthError(w, err)
	}
	if err := h.svc.Revoke(withAddr(r), f); err != nil {
		return oauthError(w, err)
	}
	return httpx.JSON(w, http.StatusOK, struct{}{})
}
