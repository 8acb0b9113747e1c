package signin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	csrfCookie    = "haven_csrf"
	sessionCookie = "haven_signin"
	// SessionLifetime is how long the account page stays signed in.
	SessionLifetime = 15 * time.Minute
)

// Session states.
const (
	stateEnrol = "enrol" // password checked; the second factor must be set up first
	stateOK    = "ok"    // fully signed in
	// stateCode + "oidc:<id>": signed in at a company identity provider;
	// the TOTP code is still to give.
	stateCode = "code-"
)

func (p *Page) mac(parts ...string) string {
	m := hmac.New(sha256.New, p.opts.CookieKey)
	for _, s := range parts {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func randomString() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (p *Page) secure() bool { return strings.HasPrefix(p.opts.PublicBaseURL, "https://") }

func (p *Page) setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/_haven/", HttpOnly: true,
		Secure: p.secure(), SameSite: http.SameSiteStrictMode, MaxAge: int(maxAge / time.Second)})
}

// csrfToken returns the form token of the request's CSRF cookie, setting
// a new cookie when there is none.
func (p *Page) csrfToken(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(csrfCookie)
	v := ""
	if err == nil && len(c.Value) >= 16 && len(c.Value) <= 64 {
		v = c.Value
	} else {
		v = randomString()
		p.setCookie(w, csrfCookie, v, 24*time.Hour)
	}
	return p.mac("csrf", v)
}

// csrfOK checks a form's token against the CSRF cookie.
func (p *Page) csrfOK(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	if err != nil || c.Value == "" {
		return false
	}
	return hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(p.mac("csrf", c.Value)))
}

// session is the signed-in state of the browser.
type session struct {
	userID string
	state  string
}

func (p *Page) setSession(w http.ResponseWriter, s session) {
	exp := strconv.FormatInt(p.now().Add(SessionLifetime).Unix(), 10)
	payload := base64.RawURLEncoding.EncodeToString([]byte(s.userID)) + "." + s.state + "." + exp
	p.setCookie(w, sessionCookie, payload+"."+p.mac("session", payload), SessionLifetime)
}

func (p *Page) clearSession(w http.ResponseWriter) { p.setCookie(w, sessionCookie, "", -time.Second) }

func (p *Page) readSession(r *http.Request) (session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	i := strings.LastIndex(c.Value, ".")
	if i < 0 {
		return session{}, false
	}
	payload, sig := c.Value[:i], c.Value[i+1:]
	if !hmac.Equal([]byte(sig), []byte(p.mac("session", payload))) {
		return session{}, false
	}
	parts := strings.Split(payload, ".")
	if len(parts) != 3 {
		return session{}, false
	}
	user, err := base64.RawURLEncoding.DecodeString(parts[0])
	exp, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || err2 != nil || p.now().Unix() > exp {
		return session{}, false
	}
	return session{userID: string(user), state: parts[1]}, true
}
