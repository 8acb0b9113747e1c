package sytest

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// registerGuest makes a guest account and returns a client for it.
func (s *server) registerGuest(t *testing.T) *mautrix.Client {
	t.Helper()
	r := s.do(t, "POST", v3+"/register?kind=guest", "", map[string]any{}).expect(t, 200)
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	cli.UserID, cli.AccessToken = id.UserID(r.str("user_id")), r.str("access_token")
	if cli.AccessToken == "" || r.str("device_id") == "" {
		t.Fatalf("guest registration: %s", r)
	}
	return cli
}

// TestGuestsOffByDefault: without registration.guests there are none.
func TestGuestsOffByDefault(t *testing.T) {
	s := startServer(t, "sqlite")
	s.do(t, "POST", v3+"/register?kind=guest", "", map[string]any{}).expectErr(t, 403, "M_GUEST_ACCESS_FORBIDDEN")
}

// TestGuests: with registration.guests, a guest account reads
// world-readable rooms, joins only rooms that allow guests and sends
// messages there, names itself, may not use the rest of the API, leaves
// rooms that stop allowing guests, and upgrades to a full account.
func TestGuests(t *testing.T) {
	eachDBEnv(t, []string{"HAVEN_REGISTRATION_GUESTS=true"}, func(t *testing.T, s *server) {
		ctx := context.Background()
		owner := s.register(t, "owner")
		guest := s.registerGuest(t)
		lp := strings.TrimPrefix(strings.SplitN(guest.UserID.String(), ":", 2)[0], "@")
		if !regexp.MustCompile(`^[0-9]+$`).MatchString(lp) {
			t.Errorf("a guest's localpart is %q, want digits", lp)
		}
		// Not for guests.
		s.do(t, "POST", v3+"/createRoom", guest.AccessToken, map[string]any{}).expectErr(t, 403, "M_GUEST_ACCESS_FORBIDDEN")
		s.do(t, "GET", v3+"/pushers", guest.AccessToken, nil).expectErr(t, 403, "M_GUEST_ACCESS_FORBIDDEN")

		// A display name of its own.
		dn := s.do(t, "GET", v3+"/profile/"+p(guest.UserID)+"/displayname", guest.AccessToken, nil)
		if dn.Status == 200 && dn.str("displayname") != "" {
			t.Errorf("a new guest has a display name: %s", dn)
		}
		s.do(t, "PUT", v3+"/profile/"+p(guest.UserID)+"/displayname", guest.AccessToken, map[string]any{"displayname": "creeper"}).expect(t, 200)
		if got := s.do(t, "GET", v3+"/profile/"+p(guest.UserID)+"/displayname", guest.AccessToken, nil).expect(t, 200).str("displayname"); got != "creeper" {
			t.Errorf("guest display name %q", got)
		}

		// A world-readable room can be read without joining.
		room := createRoom(t, owner, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := owner.SendStateEvent(ctx, room, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "world_readable"}); err != nil {
			t.Fatal(err)
		}
		sendText(t, owner, room, "readable")
		msgs := s.do(t, "GET", v3+"/rooms/"+p(room)+"/messages?dir=b&limit=5", guest.AccessToken, nil).expect(t, 200)
		if !strings.Contains(string(msgs.Raw), "readable") {
			t.Errorf("a guest cannot read a world-readable room: %s", msgs)
		}
		// Joining needs guest_access can_join.
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/join", guest.AccessToken, map[string]any{}).expectErr(t, 403, "M_GUEST_ACCESS_FORBIDDEN")
		if _, err := owner.SendStateEvent(ctx, room, event.StateGuestAccess, "", map[string]any{"guest_access": "can_join"}); err != nil {
			t.Fatal(err)
		}
		s.do(t, "POST", v3+"/join/"+p(room), guest.AccessToken, map[string]any{}).expect(t, 200)
		if m := s.stateOf(t, owner, room, "m.room.member", guest.UserID.String()); m["membership"] != "join" || m["displayname"] != "creeper" {
			t.Errorf("the guest's member event: %v", m)
		}
		// Messages, and only messages.
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/send/m.room.message/"+txn(), guest.AccessToken, map[string]any{"msgtype": "m.text", "body": "sup"}).expect(t, 200)
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/send/m.reaction/"+txn(), guest.AccessToken, map[string]any{}).expectErr(t, 403, "M_GUEST_ACCESS_FORBIDDEN")
		page, err := owner.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 1)
		if err != nil || len(page.Chunk) != 1 || page.Chunk[0].Sender != guest.UserID || page.Chunk[0].Content.Raw["body"] != "sup" {
			t.Errorf("the guest's message: %+v %v", page, err)
		}
		if _, err := guest.FullSyncRequest(ctx, mautrix.ReqSync{}); err != nil {
			t.Errorf("a guest's /sync: %v", err)
		}
		// Revoking guest access makes the guest leave.
		if _, err := owner.SendStateEvent(ctx, room, event.StateGuestAccess, "", map[string]any{"guest_access": "forbidden"}); err != nil {
			t.Fatal(err)
		}
		if m := s.stateOf(t, owner, room, "m.room.member", guest.UserID.String()); m["membership"] != "leave" {
			t.Errorf("the guest's membership after guest access was revoked: %v", m)
		}

		// Upgrading: not someone else's account; its own, with UIA.
		other := s.registerGuest(t)
		s.do(t, "POST", v3+"/register", "", map[string]any{"username": lp, "password": "a long password",
			"guest_access_token": other.AccessToken, "auth": map[string]any{"type": "m.login.dummy"}}).expectErr(t, 403, "M_FORBIDDEN")
		first := s.do(t, "POST", v3+"/register", "", map[string]any{"username": lp, "password": "a long password", "guest_access_token": guest.AccessToken}).expect(t, 401)
		up := s.do(t, "POST", v3+"/register", "", map[string]any{"username": lp, "password": "a long password", "guest_access_token": guest.AccessToken,
			"auth": map[string]any{"type": "m.login.dummy", "session": first.str("session")}}).expect(t, 200)
		if up.str("user_id") != guest.UserID.String() || up.str("access_token") == "" {
			t.Fatalf("upgrade: %s", up)
		}
		s.do(t, "POST", v3+"/createRoom", up.str("access_token"), map[string]any{}).expect(t, 200)
		// The guest's old token is no longer a guest's.
		s.do(t, "GET", v3+"/pushers", guest.AccessToken, nil).expect(t, 200)
		login := s.do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": lp}, "password": "a long password"})
		login.expect(t, 200)
	})
}
