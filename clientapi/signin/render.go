package signin

import (
	"bytes"
	"html/template"
	"net/http"
)

// formData fills the sign-in form.
type formData struct {
	Purpose   purpose
	User      string
	UserFixed bool
	Error     string
}

func (p *Page) form(w http.ResponseWriter, r *http.Request, fd formData) {
	p.formStatus(w, r, http.StatusOK, fd)
}

func (p *Page) formStatus(w http.ResponseWriter, r *http.Request, status int, fd formData) {
	p.render(w, r, status, "signin", map[string]any{"F": fd, "Action": PathSignIn, "Confirming": fd.Purpose.UIASession != "",
		"Providers": p.providerLinks(fd.Purpose)})
}

// pageData is what every template sees.
type pageData struct {
	Nonce  string
	CSRF   string
	Server string
	D      any
}

// render writes a page with its security headers: a CSP that allows only
// the page's own nonce'd style and script and inline SVG, no framing, no
// referrer (URLs may carry a login token), no caching.
func (p *Page) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	nonce := randomString()
	pd := pageData{Nonce: nonce, CSRF: p.csrfToken(w, r), Server: p.opts.ServerName, D: data}
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, pd); err != nil {
		http.Error(w, "page error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+nonce+"'; script-src 'nonce-"+nonce+"'; img-src data:; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

var pages = template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>Sign in to {{.Server}}</title>
<style nonce="{{.Nonce}}">
body{font-family:system-ui,sans-serif;background:#f4f5f7;color:#17191c;margin:0}
main{max-width:26rem;margin:3rem auto;background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.1)}
h1{font-size:1.3rem;margin-top:0}label{display:block;margin:.8rem 0 .2rem;font-weight:600}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem;border:1px solid #aab;border-radius:4px}
button,.button{margin-top:1.2rem;padding:.6rem 1.2rem;font-size:1rem;border:0;border-radius:4px;background:#0b6bcb;color:#fff;cursor:pointer;text-decoration:none;display:inline-block}
.error{background:#fdecea;color:#8a1c12;padding:.6rem;border-radius:4px}.hint{color:#555;font-size:.9rem}
button.secondary{background:#3d4451;margin-left:.5rem}.or{margin-top:1.5rem}.providers{list-style:none;padding:0}.providers .button{margin-top:.4rem;background:#3d4451}
code,.codes{font-family:ui-monospace,monospace}.codes{columns:2;padding-left:1.2rem}.secret{word-break:break-all}
</style></head><body><main>{{end}}
{{define "foot"}}</main></body></html>{{end}}

{{define "signin"}}{{template "head" .}}
<h1>{{if .D.Confirming}}Confirm it is you{{else}}Sign in to {{.Server}}{{end}}</h1>
{{if .D.F.Error}}<p class="error" role="alert">{{.D.F.Error}}</p>{{end}}
<form method="post" action="{{.D.Action}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<input type="hidden" name="redirect_url" value="{{.D.F.Purpose.RedirectURL}}">
<input type="hidden" name="uia_session" value="{{.D.F.Purpose.UIASession}}">
<input type="hidden" name="oauth" value="{{.D.F.Purpose.OAuth}}">
<label for="username">Username</label>
<input type="text" id="username" name="username" value="{{.D.F.User}}" autocomplete="username" autocapitalize="none" required {{if .D.F.UserFixed}}readonly{{else}}autofocus{{end}}>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required {{if .D.F.UserFixed}}autofocus{{end}}>
<label for="code">Two-factor code</label>
<input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="32">
<p class="hint">The 6-digit code from your authenticator app, or a recovery code. Leave it empty if you have not set one up.</p>
<button type="submit">{{if .D.Confirming}}Confirm{{else}}Sign in{{end}}</button>
</form>
{{if .D.Providers}}<p class="or">Or {{if .D.Confirming}}confirm{{else}}sign in{{end}} with your company account:</p>
<ul class="providers">{{range .D.Providers}}<li><a class="button" href="{{.URL}}">{{.Name}}</a></li>{{end}}</ul>{{end}}
{{template "foot" .}}{{end}}

{{define "code"}}{{template "head" .}}
<h1>Two-factor code</h1>
<p>Signed in as <strong>{{.D.User}}</strong>. Your account also asks for the code from your authenticator app.</p>
{{if .D.Error}}<p class="error" role="alert">{{.D.Error}}</p>{{end}}
<form method="post" action="{{.D.Action}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<input type="hidden" name="redirect_url" value="{{.D.Purpose.RedirectURL}}">
<input type="hidden" name="uia_session" value="{{.D.Purpose.UIASession}}">
<input type="hidden" name="oauth" value="{{.D.Purpose.OAuth}}">
<label for="code">Two-factor code</label>
<input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="32" required autofocus>
<p class="hint">The 6-digit code from your authenticator app, or a recovery code.</p>
<button type="submit">Continue</button>
</form>
{{template "foot" .}}{{end}}

{{define "enrol"}}{{template "head" .}}
<h1>Set up two-factor sign-in</h1>
<p>Scan this code with an authenticator app (such as FreeOTP, Aegis, Google Authenticator or 1Password), then type the 6-digit code it shows.</p>
{{.D.QR}}
<p class="hint">Or enter this key by hand (time-based, SHA-1, 6 digits, 30 seconds):</p>
<p><code class="secret">{{.D.Secret}}</code></p>
{{if .D.Error}}<p class="error" role="alert">{{.D.Error}}</p>{{end}}
<form method="post" action="{{.D.Action}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<input type="hidden" name="redirect_url" value="{{.D.Purpose.RedirectURL}}">
<input type="hidden" name="uia_session" value="{{.D.Purpose.UIASession}}">
<input type="hidden" name="oauth" value="{{.D.Purpose.OAuth}}">
<label for="code">Code from the app</label>
<input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="8" required autofocus>
<button type="submit">Turn on</button>
</form>
{{template "foot" .}}{{end}}

{{define "codes"}}{{template "head" .}}
<h1>Your recovery codes</h1>
<p>Each code signs you in once if you lose your phone. Keep them somewhere safe: they are shown only now.</p>
<ul class="codes">{{range .D.Codes}}<li>{{.}}</li>{{end}}</ul>
{{if .D.Action}}<form method="post" action="{{.D.Action}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<input type="hidden" name="redirect_url" value="{{.D.Purpose.RedirectURL}}">
<input type="hidden" name="uia_session" value="{{.D.Purpose.UIASession}}">
<input type="hidden" name="oauth" value="{{.D.Purpose.OAuth}}">
<button type="submit">I have saved them, continue</button>
</form>{{else}}<p><a class="button" href="/_haven/account">Back</a></p>{{end}}
{{template "foot" .}}{{end}}

{{define "confirm"}}{{template "head" .}}
<h1>Continue to {{.D.Site}}?</h1>
<p>You are signing in to <strong>{{.D.Site}}</strong> with your account on {{.D.Server}}. Continue only if you opened this sign-in from that site or app: it will get access to your account.</p>
<p><a class="button" href="{{.D.URL}}" rel="noreferrer">Continue to {{.D.Site}}</a></p>
<p class="hint">If you did not expect this, close this page.</p>
{{template "foot" .}}{{end}}

{{define "uiadone"}}{{template "head" .}}
<h1>Confirmed</h1>
<p>You can go back to your app and continue.</p>
<script nonce="{{.Nonce}}">
if (window.onAuthDone) { window.onAuthDone(); } else if (window.opener && window.opener.postMessage) { window.opener.postMessage("authDone", "*"); }
</script>
{{template "foot" .}}{{end}}

{{define "account"}}{{template "head" .}}
<h1>Two-factor sign-in</h1>
<p>Signed in as <strong>{{.D.User}}</strong>.</p>
{{template "reset" .}}
{{if .D.Status.Enrolled}}<p>Two-factor sign-in is <strong>on</strong>. Recovery codes left: {{.D.Status.RecoveryCodes}}.</p>
<form method="post" action="{{.D.Action}}"><input type="hidden" name="csrf" value="{{.CSRF}}"><input type="hidden" name="action" value="recovery"><button type="submit">Make new recovery codes</button></form>
<p class="hint">To move to a new phone, ask an admin to reset your two-factor sign-in.</p>
{{else}}<p>Two-factor sign-in is <strong>off</strong>.</p>
<form method="post" action="{{.D.Action}}"><input type="hidden" name="csrf" value="{{.CSRF}}"><input type="hidden" name="action" value="begin"><button type="submit">Set it up</button></form>
{{end}}
{{template "devices" .}}
<form method="post" action="{{.D.Action}}"><input type="hidden" name="csrf" value="{{.CSRF}}"><input type="hidden" name="action" value="signout"><button type="submit">Sign out of this page</button></form>
{{template "foot" .}}{{end}}

{{define "message"}}{{template "head" .}}
<h1>{{.D.Title}}</h1>
<p>{{.D.Text}}</p>
{{if .D.Back}}<p><a href="{{.D.Back}}">Start again</a></p>{{end}}
{{template "foot" .}}{{end}}
`))
