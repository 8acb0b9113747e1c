package signin

import (
	"context"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/totp"
)

// Paths of the page.
const (
	PathSignIn  = "/_haven/signin"
	PathEnrol   = "/_haven/signin/enrol"
	PathFinish  = "/_haven/signin/finish"
	PathAccount = "/_haven/account"
	PathTOTP    = "/_haven/account/totp"
)

// Users is what the page needs of the user API.
type Users interface {
	CheckCredentials(ctx context.Context, user, password, addr string) (userID string, admin bool, err error)
	IssueLoginToken(ctx context.Context, userID string) (string, error)
	UIASessionUser(ctx context.Context, sessionID string) (string, error)
	CompleteUIAStage(ctx context.Context, sessionID, userID, stage string) error
	IsAdmin(ctx context.Context, userID string) (bool, error)
	Devices(ctx context.Context, userID string) ([]userapi.DeviceInfo, error)
	DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error
	ApproveCrossSigningReset(ctx context.Context, userID, addr string) error
	SignInUpstream(ctx context.Context, id userapi.UpstreamIdentity, pol userapi.UpstreamPolicy, addr string) (userID string, admin bool, err error)
}

// SecondFactors keeps the TOTP secrets (userapi/totp.Service).
type SecondFactors interface {
	Status(ctx context.Context, userID string) (totp.Status, error)
	Begin(ctx context.Context, userID string) (totp.Enrolment, error)
	Confirm(ctx context.Context, userID, code string) ([]string, error)
	Verify(ctx context.Context, userID, code string) error
	NewRecoveryCodes(ctx context.Context, userID string) ([]string, error)
}

// Policy tells who must give a second factor (userapi/totp.Policy).
type Policy interface {
	Required(ctx context.Context, userID string, admin bool) (bool, error)
}

// Auditor records sign-ins and TOTP changes (internal/audit.Log).
type Auditor interface {
	Record(ctx context.Context, e audit.Entry)
}

// Options configure the page.
type Options struct {
	ServerName    string
	PublicBaseURL string
	// ClientOrigins receive login tokens without a confirmation page.
	ClientOrigins []string
	// CookieKey signs the cookies and CSRF tokens (32 bytes or more).
	CookieKey []byte
	Users     Users
	TOTP      SecondFactors
	Policy    Policy
	Audit     Auditor
	// NoSecondFactor: two-factor sign-in is off (auth.totp: off; the page
	// is served for the company identity providers alone), so no code is
	// asked after a provider's sign-in.
	NoSecondFactor bool
	// Upstreams are the company identity providers (OpenID Connect), one
	// button each.
	Upstreams []*Upstream
	// OAuth, when set, is the OAuth 2.0 API whose authorization requests
	// the page signs people in for (oauth.go).
	OAuth OAuth
	// ClientAddr is the request's client address (after trusted proxies).
	ClientAddr func(*http.Request) string
	Now        func() time.Time
}

// Page serves the sign-in page.
type Page struct {
	opts Options
}

// New returns the page.
func New(opts Options) *Page {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ClientAddr == nil {
		opts.ClientAddr = func(r *http.Request) string { return r.RemoteAddr }
	}
	return &Page{opts: opts}
}

func (p *Page) now() time.Time { return p.opts.Now() }

// purpose is why someone signs in: for a client (m.login.sso), to confirm
// a UIA session, or (neither) for the account page.
type purpose struct {
	RedirectURL string
	UIASession  string
	// OAuth is a sealed authorization request of the OAuth 2.0 API
	// (oauth.go).
	OAuth string
}

func purposeOf(v url.Values) purpose {
	return purpose{RedirectURL: v.Get("redirect_url"), UIASession: v.Get("uia_session"), OAuth: v.Get("oauth")}
}

// SSORedirect answers GET /login/sso/redirect?redirectUrl=: the browser goes
// on to the sign-in page.
func (p *Page) SSORedirect(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("redirectUrl")
	if _, err := validRedirect(raw); err != nil {
		p.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	http.Redirect(w, r, PathSignIn+"?"+url.Values{"redirect_url": {raw}}.Encode(), http.StatusFound)
}

// UIAFallback answers GET /auth/m.login.sso/fallback/web?session=.
func (p *Page) UIAFallback(w http.ResponseWriter, r *http.Request, stage string) {
	if stage != "m.login.sso" {
		p.fail(w, r, http.StatusNotFound, "This authentication stage has no web page.")
		return
	}
	sess := r.URL.Query().Get("session")
	if sess == "" {
		p.fail(w, r, http.StatusBadRequest, "The link has no session; start again from your app.")
		return
	}
	http.Redirect(w, r, PathSignIn+"?"+url.Values{"uia_session": {sess}}.Encode(), http.StatusFound)
}

// SignIn serves the form (GET) and checks it (POST).
func (p *Page) SignIn(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		p.signInPost(w, r)
		return
	}
	pur := purposeOf(r.URL.Query())
	user, err := p.checkPurpose(r.Context(), pur)
	if err != nil {
		p.failErr(w, r, err)
		return
	}
	fd := formData{Purpose: pur, User: user, UserFixed: user != ""}
	if user == "" && pur.OAuth != "" {
		fd.User = p.loginHint(pur.OAuth)
	}
	p.form(w, r, fd)
}

// checkPurpose validates a purpose; for a UIA session it returns the user
// who must sign in.
func (p *Page) checkPurpose(ctx context.Context, pur purpose) (string, error) {
	if n := nonEmpty(pur.RedirectURL, pur.UIASession, pur.OAuth); n > 1 {
		return "", merr.InvalidParam("A sign-in is for a client or for a confirmation, not both.")
	}
	if pur.OAuth != "" {
		if _, err := p.openOAuth(pur.OAuth); err != nil {
			return "", err
		}
	}
	if pur.RedirectURL != "" {
		if _, err := validRedirect(pur.RedirectURL); err != nil {
			return "", err
		}
	}
	if pur.UIASession != "" {
		return p.opts.Users.UIASessionUser(ctx, pur.UIASession)
	}
	return "", nil
}

func (p *Page) signInPost(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		p.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if !p.csrfOK(r) {
		p.fail(w, r, http.StatusForbidden, "This form has expired or did not come from this site. Go back, reload the page and try again.")
		return
	}
	pur := purposeOf(r.PostForm)
	fixed, err := p.checkPurpose(ctx, pur)
	if err != nil {
		p.failErr(w, r, err)
		return
	}
	user := strings.TrimSpace(r.PostFormValue("username"))
	if fixed != "" {
		user = fixed
	}
	fd := formData{Purpose: pur, User: user, UserFixed: fixed != ""}
	addr := p.opts.ClientAddr(r)
	userID, admin, err := p.opts.Users.CheckCredentials(ctx, user, r.PostFormValue("password"), addr)
	if err != nil {
		p.audit(ctx, audit.LoginFailed, "", user, addr, false, map[string]any{"via": "signin", "reason": reasonOf(err)})
		fd.Error = messageOf(err, "Wrong username or password.")
		p.formStatus(w, r, statusOf(err), fd)
		return
	}
	if fixed != "" && userID != fixed {
		p.fail(w, r, http.StatusForbidden, "This confirmation belongs to another account.")
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
	if st.Enrolled {
		code := r.PostFormValue("code")
		if strings.TrimSpace(code) == "" {
			p.audit(ctx, audit.LoginFailed, userID, userID, addr, false, map[string]any{"via": "signin", "reason": "code missing"})
			fd.Error = "Enter the 6-digit code from your authenticator app (or a recovery code)."
			p.formStatus(w, r, http.StatusUnauthorized, fd)
			return
		}
		if err := p.opts.TOTP.Verify(ctx, userID, code); err != nil {
			if _, ok := merr.As(err); !ok {
				p.internal(w, r, err)
				return
			}
			p.audit(ctx, audit.LoginFailed, userID, userID, addr, false, map[string]any{"via": "signin", "reason": "code: " + reasonOf(err)})
			fd.Error = messageOf(err, "The code is wrong.")
			p.formStatus(w, r, statusOf(err), fd)
			return
		}
	} else if need {
		// Set-up before the sign-in can finish.
		p.setSession(w, session{userID: userID, state: stateEnrol})
		p.beginEnrol(w, r, userID, pur)
		return
	}
	p.audit(ctx, audit.Login, userID, userID, addr, true, map[string]any{"via": "signin", "second_factor": st.Enrolled, "for": pur.kind()})
	p.finish(w, r, userID, pur)
}

func (pur purpose) kind() string {
	switch {
	case pur.RedirectURL != "":
		return "client"
	case pur.UIASession != "":
		return "confirmation"
	case pur.OAuth != "":
		return "oauth"
	}
	return "account"
}

// beginEnrol shows a new secret to set up.
func (p *Page) beginEnrol(w http.ResponseWriter, r *http.Request, userID string, pur purpose) {
	en, err := p.opts.TOTP.Begin(r.Context(), userID)
	if err != nil {
		p.failErr(w, r, err)
		return
	}
	p.enrolPage(w, r, userID, en, pur, "")
}

func (p *Page) enrolPage(w http.ResponseWriter, r *http.Request, userID string, en totp.Enrolment, pur purpose, errMsg string) {
	qr, err := qrSVG(en.URI)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	p.render(w, r, http.StatusOK, "enrol", map[string]any{"User": userID, "Secret": groups(en.Secret), "URI": en.URI, "QR": qr,
		"Purpose": pur, "Error": errMsg, "Action": PathEnrol})
}

// Enrol confirms a set-up with its first code (POST).
func (p *Page) Enrol(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !p.postForm(w, r) {
		return
	}
	s, ok := p.readSession(r)
	if !ok {
		p.fail(w, r, http.StatusForbidden, "Your sign-in has expired; sign in again.")
		return
	}
	pur := purposeOf(r.PostForm)
	if _, err := p.checkPurpose(ctx, pur); err != nil {
		p.failErr(w, r, err)
		return
	}
	codes, err := p.opts.TOTP.Confirm(ctx, s.userID, r.PostFormValue("code"))
	if err != nil {
		if _, ok := merr.As(err); !ok {
			p.internal(w, r, err)
			return
		}
		p.audit(ctx, audit.TOTPChange, s.userID, s.userID, p.opts.ClientAddr(r), false, map[string]any{"change": "enrol", "reason": reasonOf(err)})
		p.render(w, r, statusOf(err), "message", map[string]any{"Title": "Set-up not finished", "Text": messageOf(err, "The code is wrong.") + " Start the set-up again.", "Back": p.backLink(pur)})
		return
	}
	p.audit(ctx, audit.TOTPChange, s.userID, s.userID, p.opts.ClientAddr(r), true, map[string]any{"change": "enrol", "by": "user"})
	if s.state == stateEnrol {
		p.audit(ctx, audit.Login, s.userID, s.userID, p.opts.ClientAddr(r), true, map[string]any{"via": "signin", "second_factor": true, "for": pur.kind()})
	}
	p.setSession(w, session{userID: s.userID, state: stateOK})
	p.render(w, r, http.StatusOK, "codes", map[string]any{"Codes": codes, "Purpose": pur, "Action": PathFinish})
}

// Finish continues a sign-in after the recovery codes were shown (POST).
func (p *Page) Finish(w http.ResponseWriter, r *http.Request) {
	s, ok := p.signedInForm(w, r, "Your sign-in has expired; sign in again.")
	if !ok {
		return
	}
	pur := purposeOf(r.PostForm)
	if _, err := p.checkPurpose(r.Context(), pur); err != nil {
		p.failErr(w, r, err)
		return
	}
	p.finish(w, r, s.userID, pur)
}

// finish hands a successful sign-in to whoever asked for it.
func (p *Page) finish(w http.ResponseWriter, r *http.Request, userID string, pur purpose) {
	ctx := r.Context()
	switch {
	case pur.OAuth != "":
		p.setSession(w, session{userID: userID, state: stateOK})
		p.consentPage(w, r, userID, pur.OAuth)
	case pur.UIASession != "":
		if err := p.opts.Users.CompleteUIAStage(ctx, pur.UIASession, userID, "m.login.sso"); err != nil {
			p.failErr(w, r, err)
			return
		}
		p.render(w, r, http.StatusOK, "uiadone", nil)
	case pur.RedirectURL != "":
		u, err := validRedirect(pur.RedirectURL)
		if err != nil {
			p.failErr(w, r, err)
			return
		}
		token, err := p.opts.Users.IssueLoginToken(ctx, userID)
		if err != nil {
			p.internal(w, r, err)
			return
		}
		q := u.Query()
		q.Set("loginToken", token)
		u.RawQuery = q.Encode()
		if p.trusted(u) {
			w.Header().Set("Cache-Control", "no-store")
			http.Redirect(w, r, u.String(), http.StatusSeeOther)
			return
		}
		p.render(w, r, http.StatusOK, "confirm", map[string]any{"Site": siteName(u), "URL": template.URL(u.String()), "Server": p.opts.ServerName})
	default:
		p.setSession(w, session{userID: userID, state: stateOK})
		http.Redirect(w, r, p.accountReturn(w, r), http.StatusSeeOther)
	}
}

// Account shows the signed-in user's two-factor state (GET).
func (p *Page) Account(w http.ResponseWriter, r *http.Request) {
	s, ok := p.readSession(r)
	if !ok || s.state != stateOK {
		p.rememberAccountAction(w, r)
		http.Redirect(w, r, PathSignIn, http.StatusFound)
		return
	}
	p.accountPage(w, r, s.userID)
}

// TOTP changes the signed-in user's set-up (POST): action begin, recovery
// (new recovery codes) or signout.
func (p *Page) TOTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	s, ok := p.signedInForm(w, r, "Your sign-in has expired; sign in again.")
	if !ok {
		return
	}
	switch r.PostFormValue("action") {
	case "begin":
		p.beginEnrol(w, r, s.userID, purpose{})
	case "recovery":
		st, err := p.opts.TOTP.Status(ctx, s.userID)
		if err != nil {
			p.internal(w, r, err)
			return
		}
		if !st.Enrolled {
			p.fail(w, r, http.StatusBadRequest, "Set up two-factor sign-in first.")
			return
		}
		codes, err := p.opts.TOTP.NewRecoveryCodes(ctx, s.userID)
		if err != nil {
			p.internal(w, r, err)
			return
		}
		p.audit(ctx, audit.TOTPChange, s.userID, s.userID, p.opts.ClientAddr(r), true, map[string]any{"change": "recovery_codes", "by": "user"})
		p.render(w, r, http.StatusOK, "codes", map[string]any{"Codes": codes, "Purpose": purpose{}, "Action": ""})
	case "signout":
		p.clearSession(w)
		http.Redirect(w, r, PathSignIn, http.StatusSeeOther)
	default:
		p.fail(w, r, http.StatusBadRequest, "Unknown action.")
	}
}

// postForm parses a POST form and checks its CSRF token, answering the
// request itself when it fails.
// signedInForm reads a form posted by someone who finished signing in; it
// answers the page itself (and returns false) when the form or the sign-in
// is not good, with expired as the message for a sign-in that ran out.
func (p *Page) signedInForm(w http.ResponseWriter, r *http.Request, expired string) (session, bool) {
	if !p.postForm(w, r) {
		return session{}, false
	}
	s, ok := p.readSession(r)
	if !ok || s.state != stateOK {
		p.fail(w, r, http.StatusForbidden, expired)
		return session{}, false
	}
	return s, true
}

func (p *Page) postForm(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		p.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return false
	}
	if !p.csrfOK(r) {
		p.fail(w, r, http.StatusForbidden, "This form has expired or did not come from this site. Go back, reload the page and try again.")
		return false
	}
	return true
}

func (p *Page) backLink(pur purpose) string {
	if pur.RedirectURL == "" && pur.UIASession == "" && pur.OAuth == "" {
		return PathAccount
	}
	return PathSignIn + "?" + url.Values{"redirect_url": {pur.RedirectURL}, "uia_session": {pur.UIASession}, "oauth": {pur.OAuth}}.Encode()
}

func (p *Page) audit(ctx context.Context, action, actor, target, addr string, ok bool, detail map[string]any) {
	if p.opts.Audit == nil {
		return
	}
	if len(target) > 255 {
		target = target[:255]
	}
	p.opts.Audit.Record(ctx, audit.Entry{Action: action, Actor: actor, Target: target, Addr: addr, OK: ok, Detail: detail})
}

func reasonOf(err error) string {
	if me, ok := merr.As(err); ok {
		return me.Code
	}
	return "error"
}

// messageOf is what the page says about a refusal.
func messageOf(err error, forbidden string) string {
	me, ok := merr.As(err)
	switch {
	case !ok:
		return "Something went wrong; try again."
	case me.Code == "M_LIMIT_EXCEEDED":
		return "Too many attempts. Wait a few minutes and try again."
	case me.Code == "M_USER_DEACTIVATED":
		return "This account has been deactivated."
	case me.Code == "M_FORBIDDEN" && me.Msg != "" && forbidden == "The code is wrong.":
		return me.Msg
	case me.Code == "M_FORBIDDEN":
		return forbidden
	}
	return me.Msg
}

func statusOf(err error) int {
	if me, ok := merr.As(err); ok && me.Status >= 400 {
		return me.Status
	}
	return http.StatusInternalServerError
}

func (p *Page) failErr(w http.ResponseWriter, r *http.Request, err error) {
	me, ok := merr.As(err)
	if !ok {
		p.internal(w, r, err)
		return
	}
	p.fail(w, r, me.Status, me.Msg)
}

func (p *Page) internal(w http.ResponseWriter, r *http.Request, err error) {
	logging.From(r.Context()).WithError(err).Error("sign-in page")
	p.fail(w, r, http.StatusInternalServerError, "Something went wrong on the server. Try again later.")
}

func (p *Page) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	p.render(w, r, status, "message", map[string]any{"Title": "Cannot continue", "Text": msg})
}

// groups writes a base32 secret in groups of four for typing.
func groups(s string) string {
	var parts []string
	for len(s) > 4 {
		parts = append(parts, s[:4])
		s = s[4:]
	}
	return strings.Join(append(parts, s), " ")
}

// validRedirect checks a client's redirectUrl: an absolute URL whose
// scheme can take a browser back to an app (https, http, or an app's own
// scheme), never javascript:, data: and the like.
func validRedirect(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, merr.MissingParam("The client gave no redirectUrl.")
	}
	if len(raw) > 2048 {
		return nil, merr.InvalidParam("The redirectUrl is too long.")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return nil, merr.InvalidParam("The redirectUrl is not an absolute URL.")
	}
	switch strings.ToLower(u.Scheme) {
	case "javascript", "data", "vbscript", "file", "blob", "about", "filesystem":
		return nil, merr.InvalidParam("The redirectUrl has a scheme that cannot be used.")
	case "http", "https":
		if u.Host == "" {
			return nil, merr.InvalidParam("The redirectUrl has no host.")
		}
	}
	if u.User != nil {
		return nil, merr.InvalidParam("The redirectUrl may not carry a user name or password.")
	}
	return u, nil
}

// trusted tells whether u's origin may receive a login token without
// asking: one of the configured client origins, or this server's own.
func (p *Page) trusted(u *url.URL) bool {
	if u.Scheme != "https" && u.Scheme != "http" {
		return false
	}
	origin := strings.ToLower(u.Scheme + "://" + u.Host)
	list := p.opts.ClientOrigins
	if p.opts.PublicBaseURL != "" {
		if b, err := url.Parse(p.opts.PublicBaseURL); err == nil {
			list = append(list[:len(list):len(list)], b.Scheme+"://"+b.Host)
		}
	}
	for _, o := range list {
		if strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

func siteName(u *url.URL) string {
	if u.Host != "" {
		return u.Host
	}
	return u.Scheme + ":"
}
