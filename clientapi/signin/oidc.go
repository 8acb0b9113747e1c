package signin

import (
	"context"
	"crypto/hmac"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
)

// Paths of the company sign-in (OpenID Connect).
const (
	// PathOIDCStart + provider id starts a sign-in at that provider.
	PathOIDCStart = "/_haven/signin/oidc/"
	// PathOIDCCallback is where the providers send the browser back; it is
	// registered at each provider as public_baseurl + this path.
	PathOIDCCallback = "/_haven/oidc/callback"
	// PathCode takes the second factor after a company sign-in.
	PathCode = "/_haven/signin/code"
)

const (
	oidcCookie = "haven_oidc"
	// oidcFlowLifetime is how long a person may take at the provider.
	oidcFlowLifetime = 10 * time.Minute
	oidcHTTPTimeout  = 15 * time.Second
)

// Upstream is one company identity provider (config oidc.providers). Its
// discovery document is read at the first sign-in (and again after a
// failure), so that Haven starts while the provider is down.
type Upstream struct {
	cfg    config.OIDCProvider
	client *http.Client
	// redirect is the callback URL registered at the provider.
	redirect string

	mu       sync.Mutex
	provider *oidc.Provider
}

// NewUpstream prepares a provider; publicBaseURL is Haven's public URL.
func NewUpstream(cfg config.OIDCProvider, publicBaseURL string) (*Upstream, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("oidc provider %s: ca_file: %w", cfg.ID, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("oidc provider %s: ca_file %s holds no PEM certificate", cfg.ID, cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &Upstream{
		cfg:      cfg,
		client:   &http.Client{Transport: tr, Timeout: oidcHTTPTimeout},
		redirect: strings.TrimSuffix(publicBaseURL, "/") + PathOIDCCallback,
	}, nil
}

// ID and Name are the provider's id and button text.
func (u *Upstream) ID() string   { return u.cfg.ID }
func (u *Upstream) Name() string { return u.cfg.DisplayName() }

func (u *Upstream) ctx(ctx context.Context) context.Context { return oidc.ClientContext(ctx, u.client) }

// discover returns the provider's discovered configuration.
func (u *Upstream) discover(ctx context.Context) (*oidc.Provider, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.provider != nil {
		return u.provider, nil
	}
	ctx, cancel := context.WithTimeout(ctx, oidcHTTPTimeout)
	defer cancel()
	p, err := oidc.NewProvider(u.ctx(ctx), u.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("discovery of %s: %w", u.cfg.Issuer, err)
	}
	u.provider = p
	return p, nil
}

func (u *Upstream) oauth(p *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{ClientID: u.cfg.ClientID, ClientSecret: u.cfg.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: u.redirect, Scopes: u.cfg.Scopes.Items()}
}

// oidcFlow is the browser-bound state of one sign-in at a provider, kept
// in a signed cookie: the provider, state, nonce, PKCE verifier, purpose
// and expiry.
type oidcFlow struct {
	Provider string `json:"p"`
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Redirect string `json:"r,omitempty"`
	UIA      string `json:"u,omitempty"`
	OAuth    string `json:"o,omitempty"`
	Expires  int64  `json:"e"`
}

func (p *Page) setFlow(w http.ResponseWriter, f oidcFlow) {
	raw, _ := json.Marshal(f)
	payload := base64.RawURLEncoding.EncodeToString(raw)
	// SameSite=Lax: the provider sends the browser back with a top-level
	// GET from its own site, which a Strict cookie would not follow.
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: payload + "." + p.mac("oidc", payload), Path: PathOIDCCallback,
		HttpOnly: true, Secure: p.secure(), SameSite: http.SameSiteLaxMode, MaxAge: int(oidcFlowLifetime / time.Second)})
}

func (p *Page) readFlow(w http.ResponseWriter, r *http.Request) (oidcFlow, bool) {
	c, err := r.Cookie(oidcCookie)
	// Used once: cleared whatever the outcome.
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: "", Path: PathOIDCCallback, HttpOnly: true, Secure: p.secure(),
		SameSite: http.SameSiteLaxMode, MaxAge: -1})
	if err != nil {
		return oidcFlow{}, false
	}
	payload, sig, ok := strings.Cut(c.Value, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(p.mac("oidc", payload))) {
		return oidcFlow{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	var f oidcFlow
	if err != nil || json.Unmarshal(raw, &f) != nil || p.now().Unix() > f.Expires {
		return oidcFlow{}, false
	}
	return f, true
}

func (p *Page) upstream(id string) *Upstream {
	for _, u := range p.opts.Upstreams {
		if u.cfg.ID == id {
			return u
		}
	}
	return nil
}

// providerLink is the sign-in page's link to a provider for a purpose.
type providerLink struct {
	Name string
	URL  string
}

func (p *Page) providerLinks(pur purpose) []providerLink {
	var out []providerLink
	for _, u := range p.opts.Upstreams {
		q := url.Values{}
		if pur.RedirectURL != "" {
			q.Set("redirect_url", pur.RedirectURL)
		}
		if pur.UIASession != "" {
			q.Set("uia_session", pur.UIASession)
		}
		if pur.OAuth != "" {
			q.Set("oauth", pur.OAuth)
		}
		link := PathOIDCStart + url.PathEscape(u.cfg.ID)
		if len(q) > 0 {
			link += "?" + q.Encode()
		}
		out = append(out, providerLink{Name: u.Name(), URL: link})
	}
	return out
}

// SSORedirectIdP answers GET /login/sso/redirect/{idpId}?redirectUrl=: the
// browser goes straight to that provider.
func (p *Page) SSORedirectIdP(w http.ResponseWriter, r *http.Request, idp string) {
	raw := r.URL.Query().Get("redirectUrl")
	if _, err := validRedirect(raw); err != nil {
		p.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if p.upstream(idp) == nil {
		p.fail(w, r, http.StatusNotFound, "This server has no such identity provider.")
		return
	}
	http.Redirect(w, r, PathOIDCStart+url.PathEscape(idp)+"?"+url.Values{"redirect_url": {raw}}.Encode(), http.StatusFound)
}

// OIDCStart sends the browser to a provider (GET /_haven/signin/oidc/{id}).
func (p *Page) OIDCStart(w http.ResponseWriter, r *http.Request, id string) {
	ctx := r.Context()
	u := p.upstream(id)
	if u == nil {
		p.fail(w, r, http.StatusNotFound, "This server has no such identity provider.")
		return
	}
	pur := purposeOf(r.URL.Query())
	if _, err := p.checkPurpose(ctx, pur); err != nil {
		p.failErr(w, r, err)
		return
	}
	prov, err := u.discover(ctx)
	if err != nil {
		logging.From(ctx).WithField("provider", id).WithError(err).Warn("identity provider unreachable")
		p.fail(w, r, http.StatusServiceUnavailable, u.Name()+" cannot be reached at the moment. Try again in a few minutes, or ask your administrator.")
		return
	}
	f := oidcFlow{Provider: id, State: randomString(), Nonce: randomString(), Verifier: oauth2.GenerateVerifier(),
		Redirect: pur.RedirectURL, UIA: pur.UIASession, OAuth: pur.OAuth, Expires: p.now().Add(oidcFlowLifetime).Unix()}
	p.setFlow(w, f)
	opts := []oauth2.AuthCodeOption{oidc.Nonce(f.Nonce), oauth2.S256ChallengeOption(f.Verifier)}
	if pur.UIASession != "" {
		// A confirmation: ask the provider to check the person again.
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "login"))
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.oauth(prov).AuthCodeURL(f.State, opts...), http.StatusFound)
}

// errUpstream is a failed company sign-in: what the page says (status,
// message) and why, for the audit log and the server's log.
type errUpstream struct {
	status int
	msg    string
	reason string
	cause  error
}

func (e *errUpstream) Error() string { return e.reason }

// OIDCCallback finishes a sign-in at a provider (GET /_haven/oidc/callback).
func (p *Page) OIDCCallback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	addr := p.opts.ClientAddr(r)
	f, ok := p.readFlow(w, r)
	q := r.URL.Query()
	if !ok || f.State == "" || !hmac.Equal([]byte(q.Get("state")), []byte(f.State)) {
		via := "oidc"
		if ok {
			via += ":" + f.Provider
		}
		p.audit(ctx, audit.LoginFailed, "", "", addr, false, map[string]any{"via": via, "reason": "bad_state"})
		p.fail(w, r, http.StatusBadRequest, "This sign-in link has expired or was not started in this browser. Start the sign-in again from your app.")
		return
	}
	u := p.upstream(f.Provider)
	if u == nil {
		p.fail(w, r, http.StatusBadRequest, "This identity provider is no longer configured. Start the sign-in again from your app.")
		return
	}
	via := "oidc:" + u.cfg.ID
	pur := purpose{RedirectURL: f.Redirect, UIASession: f.UIA, OAuth: f.OAuth}
	id, err := p.exchange(ctx, u, f, q)
	if err != nil {
		var ue *errUpstream
		if !errors.As(err, &ue) {
			p.internal(w, r, err)
			return
		}
		entry := logging.From(ctx).WithField("provider", u.cfg.ID).WithField("reason", ue.reason)
		if ue.cause != nil {
			entry = entry.WithError(ue.cause)
		}
		entry.Warn("company sign-in failed")
		p.audit(ctx, audit.LoginFailed, "", "", addr, false, map[string]any{"via": via, "reason": ue.reason})
		p.render(w, r, ue.status, "message", map[string]any{"Title": "Sign-in not completed", "Text": ue.msg, "Back": p.backLink(pur)})
		return
	}
	userID, admin, err := p.opts.Users.SignInUpstream(ctx, id, userapi.UpstreamPolicy{CreateAccounts: u.cfg.CreateAccounts, AllowExistingUsers: u.cfg.AllowExistingUsers}, addr)
	if err != nil {
		// Refusals are audited by the user API.
		p.failErr(w, r, err)
		return
	}
	if pur.UIASession != "" {
		owner, err := p.opts.Users.UIASessionUser(ctx, pur.UIASession)
		if err != nil {
			p.failErr(w, r, err)
			return
		}
		if owner != userID {
			p.audit(ctx, audit.LoginFailed, userID, owner, addr, false, map[string]any{"via": via, "reason": "other_account", "for": "confirmation"})
			p.fail(w, r, http.StatusForbidden, "This confirmation belongs to another account.")
			return
		}
	}
	p.secondFactorThenFinish(w, r, userID, admin, via, pur)
}

// secondFactorThenFinish applies the two-factor policy after a company
// sign-in, as after a password: an account with TOTP gives its code, an
// account that must have one sets it up first.
func (p *Page) secondFactorThenFinish(w http.ResponseWriter, r *http.Request, userID string, admin bool, via string, pur purpose) {
	ctx := r.Context()
	if p.opts.NoSecondFactor {
		p.audit(ctx, audit.Login, userID, userID, p.opts.ClientAddr(r), true, map[string]any{"via": via, "second_factor": false, "for": pur.kind()})
		p.finish(w, r, userID, pur)
		return
	}
	st, err := p.opts.TOTP.Status(ctx, userID)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	need, err := p.opts.Policy.Required(ctx, userID, admin)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	switch {
	case st.Enrolled:
		p.setSession(w, session{userID: userID, state: stateCode + via})
		p.render(w, r, http.StatusOK, "code", map[string]any{"User": userID, "Purpose": pur, "Action": PathCode})
	case need:
		p.setSession(w, session{userID: userID, state: stateEnrol})
		p.beginEnrol(w, r, userID, pur)
	default:
		p.audit(ctx, audit.Login, userID, userID, p.opts.ClientAddr(r), true, map[string]any{"via": via, "second_factor": false, "for": pur.kind()})
		p.finish(w, r, userID, pur)
	}
}

// Code checks the second factor after a company sign-in (POST).
func (p *Page) Code(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !p.postForm(w, r) {
		return
	}
	s, ok := p.readSession(r)
	if !ok || !strings.HasPrefix(s.state, stateCode) {
		p.fail(w, r, http.StatusForbidden, "Your sign-in has expired; sign in again.")
		return
	}
	via := strings.TrimPrefix(s.state, stateCode)
	pur := purposeOf(r.PostForm)
	if _, err := p.checkPurpose(ctx, pur); err != nil {
		p.failErr(w, r, err)
		return
	}
	addr := p.opts.ClientAddr(r)
	if err := p.opts.TOTP.Verify(ctx, s.userID, r.PostFormValue("code")); err != nil {
		if _, ok := merr.As(err); !ok {
			p.internal(w, r, err)
			return
		}
		p.audit(ctx, audit.LoginFailed, s.userID, s.userID, addr, false, map[string]any{"via": via, "reason": "code: " + reasonOf(err)})
		p.render(w, r, statusOf(err), "code", map[string]any{"User": s.userID, "Purpose": pur, "Action": PathCode, "Error": messageOf(err, "The code is wrong.")})
		return
	}
	p.audit(ctx, audit.Login, s.userID, s.userID, addr, true, map[string]any{"via": via, "second_factor": true, "for": pur.kind()})
	p.clearSession(w)
	p.finish(w, r, s.userID, pur)
}

// exchange turns the provider's answer into a verified identity: the code
// is exchanged with the PKCE verifier, the ID token's signature (JWKS),
// issuer, audience, expiry and nonce are checked, and the claims missing
// from it are read from the userinfo endpoint.
func (p *Page) exchange(ctx context.Context, u *Upstream, f oidcFlow, q url.Values) (userapi.UpstreamIdentity, error) {
	if e := q.Get("error"); e != "" {
		msg := u.Name() + " did not sign you in"
		if e == "access_denied" {
			msg += ": access was denied."
		} else {
			msg += " (" + truncate(e, 64) + ")."
		}
		return userapi.UpstreamIdentity{}, &errUpstream{status: http.StatusForbidden, msg: msg + " Start again, or ask your administrator.", reason: "provider_error:" + truncate(e, 64)}
	}
	code := q.Get("code")
	if code == "" {
		return userapi.UpstreamIdentity{}, &errUpstream{status: http.StatusBadRequest, msg: "The identity provider sent no sign-in code. Start the sign-in again.", reason: "no_code"}
	}
	prov, err := u.discover(ctx)
	if err != nil {
		return userapi.UpstreamIdentity{}, &errUpstream{status: http.StatusServiceUnavailable, msg: u.Name() + " cannot be reached at the moment. Try again in a few minutes.", reason: "provider_unreachable", cause: err}
	}
	cctx, cancel := context.WithTimeout(u.ctx(ctx), oidcHTTPTimeout)
	defer cancel()
	tok, err := u.oauth(prov).Exchange(cctx, code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return userapi.UpstreamIdentity{}, &errUpstream{status: http.StatusBadRequest,
				msg: "The sign-in code was refused by " + u.Name() + " (it may have expired or been used already). Start the sign-in again.", reason: "code_refused", cause: err}
		}
		return userapi.UpstreamIdentity{}, &errUpstream{status: http.StatusServiceUnavailable, msg: u.Name() + " cannot be reached at the moment. Try again in a few minutes.", reason: "provider_unreachable", cause: err}
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return userapi.UpstreamIdentity{}, &errUpstream{status: http.StatusBadGateway, msg: u.Name() + " sent no ID token; ask your administrator to check the provider's set-up (the openid scope).", reason: "no_id_token"}
	}
	idt, err := prov.Verifier(&oidc.Config{ClientID: u.cfg.ClientID}).Verify(cctx, raw)
	if err != nil {
		return userapi.UpstreamIdentity{}, &errUpstream{status: http.StatusForbidden, msg: "The answer of " + u.Name() + " could not be verified. Start the sign-in again, or ask your administrator.", reason: "id_token_invalid", cause: err}
	}
	if !hmac.Equal([]byte(idt.Nonce), []byte(f.Nonce)) {
		return userapi.UpstreamIdentity{}, &errUpstream{status: http.StatusForbidden, msg: "The answer of " + u.Name() + " does not belong to this sign-in. Start the sign-in again.", reason: "nonce_mismatch"}
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return userapi.UpstreamIdentity{}, &errUpstream{status: http.StatusBadGateway, msg: "The answer of " + u.Name() + " could not be read.", reason: "claims_unreadable", cause: err}
	}
	wanted := []string{u.cfg.LocalpartClaim, u.cfg.DisplayNameClaim, u.cfg.EmailClaim}
	if missing(claims, wanted) && prov.UserInfoEndpoint() != "" && tok.AccessToken != "" {
		ui, err := prov.UserInfo(cctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			return userapi.UpstreamIdentity{}, &errUpstream{status: http.StatusServiceUnavailable, msg: u.Name() + " did not say who you are (userinfo). Try again in a few minutes.", reason: "userinfo_failed", cause: err}
		}
		if ui.Subject != idt.Subject {
			return userapi.UpstreamIdentity{}, &errUpstream{status: http.StatusForbidden, msg: "The answer of " + u.Name() + " could not be verified.", reason: "userinfo_subject_mismatch"}
		}
		extra := map[string]any{}
		if err := ui.Claims(&extra); err == nil {
			for k, v := range extra {
				if _, ok := claims[k]; !ok {
					claims[k] = v
				}
			}
		}
	}
	verified, said := claims["email_verified"].(bool)
	return userapi.UpstreamIdentity{Provider: u.cfg.ID, Subject: idt.Subject, Localpart: claimString(claims, u.cfg.LocalpartClaim),
		DisplayName: claimString(claims, u.cfg.DisplayNameClaim), Email: claimString(claims, u.cfg.EmailClaim),
		EmailUnverified: said && !verified}, nil
}

func missing(claims map[string]any, names []string) bool {
	for _, n := range names {
		if n == "" {
			continue
		}
		if _, ok := claims[n]; !ok {
			return true
		}
	}
	return false
}

func claimString(claims map[string]any, name string) string {
	if name == "" {
		return ""
	}
	s, _ := claims[name].(string)
	return s
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
