package signin

import (
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"time"
)

// The account page is also the account management page of the OAuth 2.0
// API (account_management_uri): besides the two-factor set-up it lists the
// user's sessions (devices) and signs them out. Clients open it with
// ?action= (the spec's account management actions) and ?device_id=.

// PathAccountDevices signs out one of the user's sessions (POST).
const PathAccountDevices = "/_haven/account/devices"

// PathAccountApprove approves the reset of the user's cross-signing keys
// (POST): the m.oauth UIA stage of sessions of the OAuth 2.0 API.
const PathAccountApprove = "/_haven/account/cross_signing_reset"

// AccountActions are the account management actions the page serves, in
// their unstable (MSC4191) and stable names.
var AccountActions = []string{
	"org.matrix.profile",
	"org.matrix.sessions_list", "org.matrix.session_view", "org.matrix.session_end",
	"org.matrix.devices_list", "org.matrix.device_view", "org.matrix.device_delete",
	"org.matrix.cross_signing_reset",
}

const accountNextCookie = "haven_account_next"

// accountQuery keeps the account page's own parameters of a query.
func accountQuery(q url.Values) url.Values {
	out := url.Values{}
	for _, k := range []string{"action", "device_id"} {
		if v := q.Get(k); v != "" && len(v) <= 256 {
			out.Set(k, v)
		}
	}
	return out
}

// rememberAccountAction keeps the action a client asked for while the
// user signs in first.
func (p *Page) rememberAccountAction(w http.ResponseWriter, r *http.Request) {
	q := accountQuery(r.URL.Query())
	if len(q) == 0 {
		return
	}
	p.setCookie(w, accountNextCookie, base64.RawURLEncoding.EncodeToString([]byte(q.Encode())), SessionLifetime)
}

// accountReturn is where a sign-in for the account page ends: the page,
// with the action remembered by rememberAccountAction.
func (p *Page) accountReturn(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(accountNextCookie)
	if err != nil {
		return PathAccount
	}
	p.setCookie(w, accountNextCookie, "", -time.Second)
	raw, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil {
		return PathAccount
	}
	v, err := url.ParseQuery(string(raw))
	if err != nil {
		return PathAccount
	}
	if q := accountQuery(v); len(q) > 0 {
		return PathAccount + "?" + q.Encode()
	}
	return PathAccount
}

type deviceRow struct {
	ID, Name, Seen string
}

// accountPage shows the two-factor state and the sessions.
func (p *Page) accountPage(w http.ResponseWriter, r *http.Request, userID string) {
	ctx := r.Context()
	st, err := p.opts.TOTP.Status(ctx, userID)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	devs, err := p.opts.Users.Devices(ctx, userID)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	rows := make([]deviceRow, 0, len(devs))
	for _, d := range devs {
		row := deviceRow{ID: d.DeviceID, Name: d.DeviceID}
		if d.DisplayName != nil && *d.DisplayName != "" {
			row.Name = *d.DisplayName
		}
		if d.LastSeenTS > 0 {
			row.Seen = time.UnixMilli(d.LastSeenTS).UTC().Format("2006-01-02 15:04 UTC")
		}
		rows = append(rows, row)
	}
	q := r.URL.Query()
	focus := q.Get("device_id")
	notice := ""
	switch q.Get("action") {
	case "org.matrix.session_end", "org.matrix.device_delete":
		if focus != "" {
			notice = "Your app asks you to sign out the session " + focus + ": use its Sign out button below."
		}
	}
	p.render(w, r, http.StatusOK, "account", map[string]any{"User": userID, "Status": st, "Action": PathTOTP,
		"Devices": rows, "Focus": focus, "Notice": notice, "DeviceAction": PathAccountDevices,
		"Reset": q.Get("action") == "org.matrix.cross_signing_reset", "ResetAction": PathAccountApprove})
}

// AccountApprove approves, for the signed-in user, the reset of their
// cross-signing keys asked for by their app (POST; the m.oauth UIA stage).
func (p *Page) AccountApprove(w http.ResponseWriter, r *http.Request) {
	s, ok := p.signedInForm(w, r, "Your sign-in has expired; sign in again.")
	if !ok {
		return
	}
	if err := p.opts.Users.ApproveCrossSigningReset(r.Context(), s.userID, p.opts.ClientAddr(r)); err != nil {
		p.failErr(w, r, err)
		return
	}
	p.render(w, r, http.StatusOK, "message", map[string]any{"Title": "Reset approved",
		"Text": "Go back to your app and continue within 10 minutes: it can now reset your cross-signing keys (your digital identity) once."})
}

// AccountDevices signs out one of the signed-in user's sessions (POST).
func (p *Page) AccountDevices(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	s, ok := p.signedInForm(w, r, "Your sign-in has expired; sign in again.")
	if !ok {
		return
	}
	id := r.PostFormValue("device_id")
	if id == "" || len(id) > 512 {
		p.fail(w, r, http.StatusBadRequest, "No session was named.")
		return
	}
	if err := p.opts.Users.DeleteDevices(ctx, s.userID, []string{id}); err != nil {
		p.failErr(w, r, err)
		return
	}
	http.Redirect(w, r, PathAccount, http.StatusSeeOther)
}

func init() {
	template.Must(pages.New("reset").Parse(`{{if .D.Reset}}<h1>Reset your digital identity</h1>
<p>Your app asks to reset your cross-signing keys. Do this only if you asked for it in your app (for example because you lost your recovery key): other people and your other sessions will have to verify you again.</p>
<form method="post" action="{{.D.ResetAction}}"><input type="hidden" name="csrf" value="{{.CSRF}}"><button type="submit">Approve the reset</button></form>
{{end}}`))
	template.Must(pages.New("devices").Parse(`<h1>Sessions</h1>
{{if .D.Notice}}<p class="error" role="status">{{.D.Notice}}</p>{{end}}
{{if .D.Devices}}<ul class="providers">{{range .D.Devices}}<li>{{if eq .ID $.D.Focus}}<strong>&#9654; {{.Name}}</strong>{{else}}<strong>{{.Name}}</strong>{{end}}
<br><code>{{.ID}}</code>{{if .Seen}} <span class="hint">last active {{.Seen}}</span>{{end}}
<form method="post" action="{{$.D.DeviceAction}}"><input type="hidden" name="csrf" value="{{$.CSRF}}"><input type="hidden" name="device_id" value="{{.ID}}"><button type="submit">Sign out</button></form></li>
{{end}}</ul>{{else}}<p>No sessions.</p>{{end}}
`))
}
