package signin

import (
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi/oauth"
)

// Paths of the OAuth 2.0 API's browser side.
const (
	// PathAuthorize is the authorization endpoint.
	PathAuthorize = "/_haven/oauth2/authorize"
	// PathConsent takes the user's answer on the consent page.
	PathConsent = "/_haven/oauth2/consent"
)

// authRequestLifetime is how long a person may take to sign in and
// consent after the client opened the authorization endpoint.
const authRequestLifetime = 30 * time.Minute

// OAuth is the OAuth 2.0 API (userapi/oauth.Service).
type OAuth interface {
	Authorize(ctx context.Context, q url.Values) (oauth.AuthRequest, oauth.Client, error)
	Client(ctx context.Context, clientID string) (oauth.Client, bool, error)
	IssueCode(ctx context.Context, req oauth.AuthRequest, userID string) (string, error)
}

// sealedRequest is an authorization request carried through the sign-in
// (form fields, the company sign-in's cookie) as the purpose "oauth":
// HMAC-signed, so the browser cannot change it, and with an expiry.
type sealedRequest struct {
	Req     oauth.AuthRequest `json:"q"`
	Expires int64             `json:"e"`
}

func (p *Page) sealOAuth(req oauth.AuthRequest) string {
	raw, _ := json.Marshal(sealedRequest{Req: req, Expires: p.now().Add(authRequestLifetime).Unix()})
	payload := base64.RawURLEncoding.EncodeToString(raw)
	return payload + "." + p.mac("oauth", payload)
}

func (p *Page) openOAuth(sealed string) (oauth.AuthRequest, error) {
	expired := merr.InvalidParam("This sign-in has expired or was changed. Start it again from your app.")
	if p.opts.OAuth == nil {
		return oauth.AuthRequest{}, merr.NotFound("This server does not offer OAuth sign-in.")
	}
	i := strings.LastIndex(sealed, ".")
	if i < 0 || len(sealed) > 8<<10 {
		return oauth.AuthRequest{}, expired
	}
	payload, sig := sealed[:i], sealed[i+1:]
	if !hmac.Equal([]byte(sig), []byte(p.mac("oauth", payload))) {
		return oauth.AuthRequest{}, expired
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	var sr sealedRequest
	if err != nil || json.Unmarshal(raw, &sr) != nil || p.now().Unix() > sr.Expires {
		return oauth.AuthRequest{}, expired
	}
	return sr.Req, nil
}

// loginHint is the user name to fill in from the request's login_hint
// (mxid:@alice:example.com, or a plain user name).
func (p *Page) loginHint(sealed string) string {
	req, err := p.openOAuth(sealed)
	if err != nil {
		return ""
	}
	return strings.TrimPrefix(req.LoginHint, "mxid:")
}

// Authorize is the authorization endpoint (GET): a valid request goes on
// to the sign-in page; an invalid one goes back to the client with an
// error, or, when the client or its redirect URI is unknown, stops on an
// error page.
func (p *Page) Authorize(w http.ResponseWriter, r *http.Request) {
	if p.opts.OAuth == nil {
		p.fail(w, r, http.StatusNotFound, "This server does not offer OAuth sign-in.")
		return
	}
	req, _, err := p.opts.OAuth.Authorize(r.Context(), r.URL.Query())
	if err != nil {
		var oe *oauth.Error
		if !errors.As(err, &oe) {
			p.internal(w, r, err)
			return
		}
		if oe.Redirect {
			w.Header().Set("Cache-Control", "no-store")
			http.Redirect(w, r, oauth.ErrorRedirect(req, oe), http.StatusSeeOther)
			return
		}
		p.fail(w, r, http.StatusBadRequest, "The app's sign-in request cannot be used: "+oe.Description+".")
		return
	}
	http.Redirect(w, r, PathSignIn+"?"+url.Values{"oauth": {p.sealOAuth(req)}}.Encode(), http.StatusSeeOther)
}

// consentPage asks the signed-in user whether the client may have access.
func (p *Page) consentPage(w http.ResponseWriter, r *http.Request, userID, sealed string) {
	req, err := p.openOAuth(sealed)
	if err != nil {
		p.failErr(w, r, err)
		return
	}
	c, ok, err := p.opts.OAuth.Client(r.Context(), req.ClientID)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	if !ok {
		p.fail(w, r, http.StatusBadRequest, "The app is no longer registered here. Start the sign-in again from your app.")
		return
	}
	site := c.ClientURI
	if u, err := url.Parse(c.ClientURI); err == nil {
		site = u.Host
	}
	p.render(w, r, http.StatusOK, "consent", map[string]any{"User": userID, "Client": c.Name(), "Site": site,
		"ClientURI": template.URL(c.ClientURI), "Device": req.DeviceID, "OAuth": sealed, "Action": PathConsent})
}

// Consent takes the answer of the consent page (POST): allow sends the
// browser back to the client with a code, deny with access_denied.
func (p *Page) Consent(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	s, ok := p.signedInForm(w, r, "Your sign-in has expired; start again from your app.")
	if !ok {
		return
	}
	req, err := p.openOAuth(r.PostFormValue("oauth"))
	if err != nil {
		p.failErr(w, r, err)
		return
	}
	if _, ok, err := p.opts.OAuth.Client(ctx, req.ClientID); err != nil || !ok {
		if err != nil {
			p.internal(w, r, err)
			return
		}
		p.fail(w, r, http.StatusBadRequest, "The app is no longer registered here. Start the sign-in again from your app.")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	addr := p.opts.ClientAddr(r)
	if r.PostFormValue("action") != "allow" {
		p.audit(ctx, audit.LoginFailed, s.userID, s.userID, addr, false, map[string]any{"via": "oauth", "reason": "consent_denied", "client_id": req.ClientID})
		http.Redirect(w, r, oauth.ErrorRedirect(req, &oauth.Error{Code: oauth.ErrAccessDenied, Description: "The user did not allow the access"}), http.StatusSeeOther)
		return
	}
	code, err := p.opts.OAuth.IssueCode(ctx, req, s.userID)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	http.Redirect(w, r, oauth.CodeRedirect(req, code), http.StatusSeeOther)
}

func init() {
	template.Must(pages.New("consent").Parse(`{{template "head" .}}
<h1>Allow {{.D.Client}}?</h1>
<p><strong>{{.D.Client}}</strong> (<a href="{{.D.ClientURI}}" rel="noreferrer">{{.D.Site}}</a>) asks for full access to your account <strong>{{.D.User}}</strong> on {{.Server}}, as a new session (device {{.D.Device}}).</p>
<p class="hint">Allow it only if you started this sign-in from that app. You can end the session at any time from your account page.</p>
<form method="post" action="{{.D.Action}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<input type="hidden" name="oauth" value="{{.D.OAuth}}">
<button type="submit" name="action" value="allow">Allow</button>
<button type="submit" name="action" value="deny" class="secondary">Cancel</button>
</form>
{{template "foot" .}}`))
}

// nonEmpty counts the non-empty strings.
func nonEmpty(ss ...string) int {
	n := 0
	for _, s := range ss {
		if s != "" {
			n++
		}
	}
	return n
}
