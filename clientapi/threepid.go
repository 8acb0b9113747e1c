package clientapi

import (
	"encoding/json"
	"errors"
	"html/template"
	"mime"
	"net/http"
	"strings"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
)

// threePIDRoutes: email addresses on accounts, when email is configured
// (email.smtp_host): requestToken for adding an address and for a password
// reset, the confirmation page the email links to, /account/3pid/add
// (with UIA), the list and deleting. Haven talks to no identity server and
// sends no text messages: those endpoints answer as Synapse does with
// nothing configured, rather than 404.
func (a *API) threePIDRoutes() []Route {
	const acc = v3 + "/account/3pid"
	out := []Route{
		{Method: "POST", Path: acc, H: threePIDChangesDisabled, Auth: authUser},
		{Method: "GET", Path: acc, H: a.listThreePIDs, Auth: authUser},
		{Method: "POST", Path: acc + "/bind", H: bindThreePID, Auth: authUser},
		{Method: "POST", Path: acc + "/unbind", H: unbindThreePID, Auth: authUser},
	}
	for _, path := range []string{acc + "/msisdn/requestToken", v3 + "/register/email/requestToken",
		v3 + "/register/msisdn/requestToken", v3 + "/account/password/msisdn/requestToken"} {
		out = append(out, Route{Method: "POST", Path: path, H: threePIDMediumNotSupported, Auth: authNone, Limit: limitLogin})
	}
	if a.Users == nil || !a.Users.EmailEnabled() {
		for _, path := range []string{acc + "/email/requestToken", v3 + "/account/password/email/requestToken"} {
			out = append(out, Route{Method: "POST", Path: path, H: threePIDMediumNotSupported, Auth: authNone, Limit: limitLogin})
		}
		return append(out,
			Route{Method: "POST", Path: acc + "/add", H: threePIDChangesDisabled, Auth: authUser},
			Route{Method: "POST", Path: acc + "/delete", H: threePIDChangesDisabled, Auth: authUser})
	}
	return append(out,
		Route{Method: "POST", Path: acc + "/email/requestToken", H: a.requestEmailToken(userapi.PurposeAdd), Auth: authNone, Limit: limitLogin},
		Route{Method: "POST", Path: v3 + "/account/password/email/requestToken", H: a.requestEmailToken(userapi.PurposePassword), Auth: authNone, Limit: limitLogin},
		Route{Method: "POST", Path: acc + "/add", H: uia(a.addThreePID), Auth: authUser},
		Route{Method: "POST", Path: acc + "/delete", H: a.deleteThreePID, Auth: authUser},
		Route{Method: "GET", Path: userapi.SubmitTokenPath, H: a.submitTokenPage, Auth: authNone},
		Route{Method: "POST", Path: userapi.SubmitTokenPath, H: a.submitToken, Auth: authNone, Limit: limitLogin})
}

func (a *API) listThreePIDs(w http.ResponseWriter, r *http.Request) error {
	list, err := a.Users.ThreePIDs(r.Context(), DeviceFrom(r).UserID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"threepids": list})
}

func (a *API) requestEmailToken(purpose string) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req userapi.TokenRequest
		if err := httpx.DecodeJSON(r, &req, maxSmallBody); err != nil {
			return err
		}
		sid, err := a.Users.RequestEmailToken(withAddr(r), purpose, req)
		if err != nil {
			return err
		}
		return httpx.JSON(w, http.StatusOK, map[string]string{"sid": sid, "submit_url": strings.TrimRight(a.Cfg.PublicBaseURL, "/") + userapi.SubmitTokenPath})
	}
}

type addThreePIDRequest struct {
	Auth         json.RawMessage `json:"auth"`
	ClientSecret string          `json:"client_secret"`
	SID          string          `json:"sid"`
}

// addThreePIDParams are what the UIA session keeps of the first request.
type addThreePIDParams struct {
	ClientSecret string `json:"client_secret,omitempty"`
	SID          string `json:"sid,omitempty"`
}

func (a *API) addThreePID(w http.ResponseWriter, r *http.Request) error {
	var req addThreePIDRequest
	if err := httpx.DecodeJSON(r, &req, maxAuthBody); err != nil {
		return err
	}
	dev := DeviceFrom(r)
	p := addThreePIDParams{ClientSecret: req.ClientSecret, SID: req.SID}
	check := func() error {
		if p.SID == "" || p.ClientSecret == "" {
			return merr.MissingParam("sid and client_secret are required")
		}
		return nil
	}
	ctx := withAddr(r)
	if err := a.Users.CheckUIA(ctx, userapi.UIARequest{Op: "add_3pid", UserID: dev.UserID, Flows: userapi.PasswordFlows(), Auth: req.Auth, Params: &p, Check: check}); err != nil {
		return err
	}
	if err := a.Users.AddThreePID(ctx, dev.UserID, p.SID, p.ClientSecret); err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{})
}

func (a *API) deleteThreePID(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Medium   string `json:"medium"`
		Address  string `json:"address"`
		IDServer string `json:"id_server"`
	}
	if err := httpx.DecodeJSON(r, &req, maxSmallBody); err != nil {
		return err
	}
	if err := a.Users.DeleteThreePID(withAddr(r), DeviceFrom(r).UserID, req.Medium, req.Address); err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}

// submitTokenPage is the page an email's link opens: it asks to confirm
// with a button, so that a mail scanner following links confirms nothing.
func (a *API) submitTokenPage(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	return confirmPage(w, http.StatusOK, pageData{ServerName: a.Cfg.ServerName, Ask: true,
		SID: q.Get("sid"), ClientSecret: q.Get("client_secret"), Token: q.Get("token")})
}

// submitToken validates a session: a client posting the code the user
// typed (JSON, the spec's submit_url), or the confirmation page's form.
func (a *API) submitToken(w http.ResponseWriter, r *http.Request) error {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/x-www-form-urlencoded" {
		if err := r.ParseForm(); err != nil {
			return merr.BadJSON("Unreadable form")
		}
		err := a.Users.SubmitEmailToken(withAddr(r), r.PostForm.Get("sid"), r.PostForm.Get("client_secret"), r.PostForm.Get("token"))
		if err != nil {
			var me *merr.Error
			if !errors.As(err, &me) || me.Status >= 500 {
				return err
			}
			return confirmPage(w, http.StatusBadRequest, pageData{ServerName: a.Cfg.ServerName, Failed: me.Msg})
		}
		return confirmPage(w, http.StatusOK, pageData{ServerName: a.Cfg.ServerName, Done: true})
	}
	var req struct {
		SID          string `json:"sid"`
		ClientSecret string `json:"client_secret"`
		Token        string `json:"token"`
	}
	if err := httpx.DecodeJSON(r, &req, maxSmallBody); err != nil {
		return err
	}
	if err := a.Users.SubmitEmailToken(withAddr(r), req.SID, req.ClientSecret, req.Token); err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]bool{"success": true})
}

type pageData struct {
	ServerName               string
	Ask, Done                bool
	Failed                   string
	SID, ClientSecret, Token string
}

var confirmTmpl = template.Must(template.New("confirm").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>{{.ServerName}}: confirm your email address</title>
<style>body{font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em}button{padding:.6em 1.2em;font-size:1em}</style></head>
<body><h1>{{.ServerName}}</h1>
{{if .Ask}}<p>Confirm that this email address is yours.</p>
<form method="post" action=""><input type="hidden" name="sid" value="{{.SID}}"><input type="hidden" name="client_secret" value="{{.ClientSecret}}">
<input type="hidden" name="token" value="{{.Token}}"><button type="submit">Confirm</button></form>
{{else if .Done}}<p id="done">Your email address is confirmed. Go back to your chat app to continue.</p>
{{else}}<p id="failed">This link does not work: {{.Failed}}</p><p>Ask your chat app to send a new email.</p>{{end}}
</body></html>
`))

func confirmPage(w http.ResponseWriter, status int, d pageData) error {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	return confirmTmpl.Execute(w, d)
}

func threePIDChangesDisabled(w http.ResponseWriter, r *http.Request) error {
	return merr.Custom(http.StatusBadRequest, "M_FORBIDDEN", "3PID changes are disabled on this server")
}

func threePIDMediumNotSupported(w http.ResponseWriter, r *http.Request) error {
	return merr.Custom(http.StatusBadRequest, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "This server cannot validate this kind of address")
}

func bindThreePID(w http.ResponseWriter, r *http.Request) error {
	return merr.ServerNotTrusted("This server trusts no identity server")
}

// unbindThreePID: nothing is bound through this server, so there is nothing
// it could unbind.
func unbindThreePID(w http.ResponseWriter, r *http.Request) error {
	return httpx.JSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}
