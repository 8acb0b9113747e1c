package sytest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/haven-chat/haven/internal/mailer/smtptest"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TestProfileLookUps: profile look-ups need an access token, and with
// profiles.limit_to_shared_rooms only users sharing a room with the user,
// or finding them in the user directory (a public room), see the profile.
func TestProfileLookUps(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			s := startServer(t, db, "HAVEN_PROFILES_LIMIT_TO_SHARED_ROOMS=true")
			ctx := context.Background()
			alice, bob, carol, dave := s.register(t, "alice"), s.register(t, "bob"), s.register(t, "carol"), s.register(t, "dave")
			path := v3 + "/profile/" + p(alice.UserID)
			s.do(t, "GET", path, "", nil).expectErr(t, 401, "M_MISSING_TOKEN")
			s.do(t, "GET", path+"/displayname", "", nil).expectErr(t, 401, "M_MISSING_TOKEN")

			// Nobody shares a room with alice yet.
			s.do(t, "GET", path, bob.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
			s.do(t, "GET", path, alice.AccessToken, nil).expect(t, 200)
			s.do(t, "GET", v3+"/profile/"+p("@nobody:localhost"), bob.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")

			room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
			if err != nil {
				t.Fatal(err)
			}
			// An invite is not a shared room; joining makes one.
			s.do(t, "GET", path, bob.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
			if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
			if dn := s.do(t, "GET", path+"/displayname", bob.AccessToken, nil).expect(t, 200).str("displayname"); dn != "alice" {
				t.Fatalf("displayname %q", dn)
			}
			s.do(t, "GET", path, carol.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")

			// In a public room, alice can be found in the user directory by
			// anyone, so her profile is visible to all.
			if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"}); err != nil {
				t.Fatal(err)
			}
			s.do(t, "GET", path, carol.AccessToken, nil).expect(t, 200)
			// dave is in no public room, and shares none with carol.
			s.do(t, "GET", v3+"/profile/"+p(dave.UserID), carol.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
		})
	}
}

// TestEmailPasswordReset: a real server sending through an SMTP server on
// loopback: an email address bound to the account (the link's page
// confirms it), then a forgotten password reset with it, as Element does.
func TestEmailPasswordReset(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			smtp := smtptest.Start(t, nil)
			const base = "https://chat.example.test"
			s := startServer(t, db, "HAVEN_PUBLIC_BASEURL="+base, "HAVEN_EMAIL_SMTP_HOST=127.0.0.1", fmt.Sprintf("HAVEN_EMAIL_SMTP_PORT=%d", smtp.Port),
				"HAVEN_EMAIL_SMTP_TLS=none", "HAVEN_EMAIL_FROM=Haven <chat@example.test>")
			alice := s.register(t, "alice")
			ctx := context.Background()
			link := func(n int) string {
				m := smtp.WaitFor(t, fmt.Sprintf("email %d", n), func(smtptest.Mail) bool { return len(smtp.Mails()) >= n })
				m = smtp.Mails()[n-1]
				l := regexp.MustCompile(regexp.QuoteMeta(base) + `\S+`).FindString(m.Text)
				if l == "" || m.To[0] != "alice@example.test" {
					t.Fatalf("email %+v", m)
				}
				return s.URL + strings.TrimPrefix(l, base)
			}
			confirm := func(l string) {
				u, _ := url.Parse(l)
				res, err := http.PostForm(s.URL+u.Path, u.Query())
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || !strings.Contains(string(body), `id="done"`) {
					t.Fatalf("confirm: %d %s", res.StatusCode, body)
				}
			}

			sid := s.do(t, "POST", v3+"/account/3pid/email/requestToken", "", map[string]any{"client_secret": "s1", "email": "alice@example.test", "send_attempt": 1}).expect(t, 200).str("sid")
			confirm(link(1))
			add := map[string]any{"sid": sid, "client_secret": "s1"}
			session := s.do(t, "POST", v3+"/account/3pid/add", alice.AccessToken, add).expect(t, 401).str("session")
			add["auth"] = map[string]any{"type": "m.login.password", "session": session, "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password-alice"}
			s.do(t, "POST", v3+"/account/3pid/add", alice.AccessToken, add).expect(t, 200)
			if got := s.do(t, "GET", v3+"/account/3pid", alice.AccessToken, nil).expect(t, 200).String(); !strings.Contains(got, "alice@example.test") {
				t.Fatalf("3pids %s", got)
			}

			sid = s.do(t, "POST", v3+"/account/password/email/requestToken", "", map[string]any{"client_secret": "s2", "email": "alice@example.test", "send_attempt": 1}).expect(t, 200).str("sid")
			confirm(link(2))
			creds := map[string]any{"sid": sid, "client_secret": "s2"}
			s.do(t, "POST", v3+"/account/password", "", map[string]any{"new_password": "a new password", "logout_devices": true,
				"auth": map[string]any{"type": "m.login.email.identity", "threepid_creds": creds, "threepidCreds": creds}}).expect(t, 200)
			if _, err := alice.Whoami(ctx); err == nil {
				t.Fatal("the old session survived the reset")
			}
			s.do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "a new password"}).expect(t, 200)
		})
	}
}
