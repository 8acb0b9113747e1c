package sytest

import (
	"context"
	"testing"

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
