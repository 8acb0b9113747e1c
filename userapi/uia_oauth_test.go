package userapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestUIAOAuthStage(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clk := &clock{t: time.Unix(1_700_000_000, 0)}
		const account = "https://hs.example/_haven/account"
		s := newTestService(t, db, nil, func(o *Options) { o.Now = clk.Now; o.AccountURL = account })
		alice := mustRegister(t, s, "alice", "pw")
		if _, err := db.Exec(ctx, `INSERT INTO oauth_sessions (user_id, device_id, client_id, scope, created_ts) VALUES ($1, 'OAUTHDEV', 'c1', 's', 0)`, alice.UserID); err != nil {
			t.Fatal(err)
		}
		req := func(device string, auth any) UIARequest {
			r := UIARequest{Op: OpCrossSigning, UserID: alice.UserID, DeviceID: device, Flows: PasswordFlows()}
			if auth != nil {
				r.Auth, _ = json.Marshal(auth)
			}
			return r
		}
		flows := func(t *testing.T, r UIARequest) (string, string) {
			t.Helper()
			sid, me := uiaStep(t, s, r)
			if me == nil {
				t.Fatal("passed without auth")
			}
			raw, _ := json.Marshal(UIABody(me))
			return sid, string(raw)
		}

		// A password session keeps the password stage; so does an
		// operation the account page cannot approve.
		if _, body := flows(t, req(alice.DeviceID, nil)); body != `{"flows":[{"stages":["m.login.password"]}],"params":{},"session":"`+mustSession(t, body)+`"}` {
			t.Fatalf("password session: %s", body)
		}
		other := req("OAUTHDEV", nil)
		other.Op = "delete_devices"
		if _, body := flows(t, other); !json.Valid([]byte(body)) || strings.Contains(body, "m.oauth") {
			t.Fatalf("delete_devices from OAuth: %s", body)
		}

		// The OAuth device gets m.oauth in both names with the link.
		sid, body := flows(t, req("OAUTHDEV", nil))
		link := account + "?action=org.matrix.cross_signing_reset"
		want := `{"flows":[{"stages":["m.oauth"]},{"stages":["org.matrix.cross_signing_reset"]}],"params":{"m.oauth":{"url":"` + link +
			`"},"org.matrix.cross_signing_reset":{"url":"` + link + `"}},"session":"` + sid + `"}`
		if body != want {
			t.Fatalf("challenge\n got %s\nwant %s", body, want)
		}

		// Not approved: the session alone continues the challenge, the
		// stage named fails.
		if _, me := uiaStep(t, s, req("OAUTHDEV", map[string]any{"session": sid})); me == nil || !IsUIAChallenge(me) {
			t.Fatalf("session alone: %v", me)
		}
		if _, me := uiaStep(t, s, req("OAUTHDEV", map[string]any{"session": sid, "type": StageOAuth})); me == nil || me.Code != "M_FORBIDDEN" {
			t.Fatalf("stage without approval: %v", me)
		}

		// An approval lapses after ApprovalLifetime.
		if err := s.ApproveCrossSigningReset(ctx, alice.UserID, "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		clk.Add(ApprovalLifetime + time.Second)
		if _, me := uiaStep(t, s, req("OAUTHDEV", map[string]any{"session": sid, "type": StageOAuthUnstable})); me == nil || me.Code != "M_FORBIDDEN" {
			t.Fatalf("lapsed approval: %v", me)
		}

		// A valid one passes once (the auth session itself has lapsed by
		// now: a new one starts).
		if err := s.ApproveCrossSigningReset(ctx, alice.UserID, "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		clk.Add(ApprovalLifetime - time.Second)
		if _, me := uiaStep(t, s, req("OAUTHDEV", map[string]any{"type": StageOAuthUnstable})); me != nil {
			t.Fatalf("approved: %v", me)
		}
		if _, me := uiaStep(t, s, req("OAUTHDEV", map[string]any{})); me == nil {
			t.Fatal("approval used twice")
		}
		// The approval is the user's: it does not serve another user.
		bob := mustRegister(t, s, "bob", "pw")
		if err := s.ApproveCrossSigningReset(ctx, alice.UserID, ""); err != nil {
			t.Fatal(err)
		}
		if taken, err := s.takeApproval(ctx, bob.UserID, OpCrossSigning); err != nil || taken {
			t.Fatalf("bob took alice's approval: %v %v", taken, err)
		}
	})
}

func mustSession(t *testing.T, body string) string {
	t.Helper()
	var v struct {
		Session string `json:"session"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v.Session
}

// An OAuth session's row goes with its device: a device ID used again by
// a password sign-in is not an OAuth device.
func TestOAuthSessionEndsWithDevice(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, nil)
		alice := mustRegister(t, s, "alice", "pw")
		sess, err := s.LoginOAuth(ctx, alice.UserID, "PHONE", "Element X", "127.0.0.1", "client-1", "urn:matrix:client:api:*")
		if err != nil {
			t.Fatal(err)
		}
		client, scope, ok, err := s.OAuthSession(ctx, alice.UserID, sess.DeviceID)
		if err != nil || !ok || client != "client-1" || scope != "urn:matrix:client:api:*" {
			t.Fatalf("session after LoginOAuth: %q %q %v %v", client, scope, ok, err)
		}
		if err := s.DeleteDevices(ctx, alice.UserID, []string{sess.DeviceID}); err != nil {
			t.Fatal(err)
		}
		if _, _, ok, err := s.OAuthSession(ctx, alice.UserID, sess.DeviceID); err != nil || ok {
			t.Fatalf("session after the device was deleted: %v %v", ok, err)
		}
	})
}
