package sytest

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

// The m.oauth UIA stage (MSC4312) end to end: a session of the OAuth 2.0
// API has no password, so replacing its cross-signing keys is approved on
// the account page (sign-in, then the approve button) and the client's
// retry passes once. A password session keeps the password stage.
func TestOAuthCrossSigningReset(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			s := startOAuthServer(t, db, "HAVEN_AUTH_TOTP=optional", "HAVEN_AUTH_TOTP_ENCRYPTION_KEY=sytest-totp-encryption-key")
			alice := s.register(t, "alice")
			user := alice.UserID.String()
			cb := newCallback(t)
			const device = "OAUTHRESET1"
			cfg := oauthConfig(s, registerClient(t, s, cb.uri()), cb.uri(), device)
			verifier := oauth2.GenerateVerifier()
			code := signInForCode(t, s, cb, cfg, "st", verifier, "alice", "password-alice", "")
			tok, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			access := tok.AccessToken

			key := func(usage, pub string) map[string]any {
				return map[string]any{"user_id": user, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pub: pub}}
			}
			const path = v3 + "/keys/device_signing/upload"
			// The first upload needs no auth.
			s.do(t, "POST", path, access, map[string]any{"master_key": key("master", newTestKey(t).pub)}).expect(t, 200)

			// Replacing it: 401 with the m.oauth stage (both names) and the
			// account page's link.
			replace := map[string]any{"master_key": key("master", newTestKey(t).pub)}
			ch := s.do(t, "POST", path, access, replace).expect(t, 401)
			wantURL := s.URL + "/_haven/account?action=org.matrix.cross_signing_reset"
			if got := flowTypesUIA(ch); got != "m.oauth|org.matrix.cross_signing_reset" {
				t.Fatalf("flows %s: %s", got, ch)
			}
			params, _ := ch.JSON["params"].(map[string]any)
			for _, stage := range []string{"m.oauth", "org.matrix.cross_signing_reset"} {
				if p, _ := params[stage].(map[string]any); p == nil || p["url"] != wantURL {
					t.Fatalf("params of %s: %s", stage, ch)
				}
			}
			session := ch.str("session")

			// Without approval the retry is still refused, in every form.
			replace["auth"] = map[string]any{"session": session}
			s.do(t, "POST", path, access, replace).expect(t, 401)
			replace["auth"] = map[string]any{"type": "m.oauth", "session": session}
			s.do(t, "POST", path, access, replace).expectErr(t, 401, "M_FORBIDDEN")
			// Another stage is not offered to an OAuth session.
			s.do(t, "POST", path, access, map[string]any{"master_key": replace["master_key"], "auth": map[string]any{
				"type": "m.login.password", "password": "password-alice", "identifier": map[string]any{"type": "m.id.user", "user": user}}}).
				expectErr(t, 401, "M_UNRECOGNIZED")

			// The user opens the link: signs in, then approves.
			b := newBrowser(t, s)
			r := b.get("/_haven/account?action=org.matrix.cross_signing_reset")
			if r.Status != http.StatusFound {
				t.Fatalf("account page before sign-in: %d", r.Status)
			}
			form := b.get(r.Header.Get("Location")).expect(t, 200, "Sign in")
			r = b.post("/_haven/signin", url.Values{"csrf": {form.csrf(t)}, "username": {"alice"}, "password": {"password-alice"}})
			for r.Status == http.StatusFound || r.Status == http.StatusSeeOther {
				r = b.get(r.Header.Get("Location"))
			}
			acc := r.expect(t, 200, "Approve the reset")
			// A forged form (no CSRF token) approves nothing.
			b.post("/_haven/account/cross_signing_reset", url.Values{}).expect(t, 403, "")
			s.do(t, "POST", path, access, replace).expect(t, 401)
			b.post("/_haven/account/cross_signing_reset", url.Values{"csrf": {acc.csrf(t)}}).expect(t, 200, "Reset approved")

			// The retry passes, once.
			replace["auth"] = map[string]any{"type": "m.oauth", "session": session}
			s.do(t, "POST", path, access, replace).expect(t, 200)
			// The session is used up; a new one needs a new approval.
			again := map[string]any{"master_key": key("master", newTestKey(t).pub), "auth": map[string]any{"type": "m.oauth", "session": session}}
			s.do(t, "POST", path, access, again).expectErr(t, 400, "M_UNKNOWN")
			delete(again, "auth")
			s.do(t, "POST", path, access, again).expect(t, 401)
			// An approval also lets through a retry without auth, as
			// clients of other servers send it.
			b.post("/_haven/account/cross_signing_reset", url.Values{"csrf": {acc.csrf(t)}}).expect(t, 200, "Reset approved")
			s.do(t, "POST", path, access, map[string]any{"master_key": again["master_key"]}).expect(t, 200)

			// With a second factor set up, the approval needs the code too.
			s.register(t, "bob")
			secret := enrolCLI(t, s, "bob")
			bb := newBrowser(t, s)
			form = bb.get(bb.get("/_haven/account?action=org.matrix.cross_signing_reset").Header.Get("Location")).expect(t, 200, "Sign in")
			r = bb.post("/_haven/signin", url.Values{"csrf": {form.csrf(t)}, "username": {"bob"}, "password": {"password-bob"}}).
				expect(t, 401, "Enter the 6-digit code")
			if strings.Contains(r.Body, "Approve the reset") {
				t.Fatal("approve button before the code")
			}
			bb.post("/_haven/account/cross_signing_reset", url.Values{"csrf": {form.csrf(t)}}).expect(t, 403, "")
			r = bb.post("/_haven/signin", url.Values{"csrf": {form.csrf(t)}, "username": {"bob"}, "password": {"password-bob"}, "code": {codeAt(secret, 0)}})
			for r.Status == http.StatusFound || r.Status == http.StatusSeeOther {
				r = bb.get(r.Header.Get("Location"))
			}
			acc = r.expect(t, 200, "Approve the reset")
			bb.post("/_haven/account/cross_signing_reset", url.Values{"csrf": {acc.csrf(t)}}).expect(t, 200, "Reset approved")

			// A password session of the same user keeps the password stage.
			pw := s.login(t, "alice")
			ch = s.do(t, "POST", path, pw.AccessToken, map[string]any{"master_key": key("master", newTestKey(t).pub)}).expect(t, 401)
			if got := flowTypesUIA(ch); got != "m.login.password" {
				t.Fatalf("password session flows %s", got)
			}
		})
	}
}

// flowTypesUIA lists a UIA challenge's flows, stages joined by ",", flows
// by "|".
func flowTypesUIA(r apiResp) string {
	var out []string
	flows, _ := r.JSON["flows"].([]any)
	for _, f := range flows {
		m, _ := f.(map[string]any)
		st, _ := m["stages"].([]any)
		var names []string
		for _, s := range st {
			n, _ := s.(string)
			names = append(names, n)
		}
		out = append(out, strings.Join(names, ","))
	}
	return strings.Join(out, "|")
}
