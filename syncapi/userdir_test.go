package syncapi_test

import (
	"context"
	"strings"
	"testing"

	"github.com/haven-chat/haven/roomserver"
)

// TestUserDirectoryMemberEvents: users without a profile here (other
// servers' users) are found by the display name of their member events,
// and answered with it and its avatar, in the rooms the searcher shares
// with them and in public rooms; not in rooms the searcher cannot see.
func TestUserDirectoryMemberEvents(t *testing.T) {
	eachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		for u, name := range map[string]string{"@alice:test": "Alice", "@bob:test": "Robert Remote", "@carol:test": "Carol Faraway", "@dave:test": "Dave Hidden"} {
			local := strings.TrimPrefix(strings.TrimSuffix(u, ":test"), "@")
			if _, err := w.users.CreateAccount(ctx, local, "password-"+local, false, "test"); err != nil {
				t.Fatal(err)
			}
			if err := w.users.SetDisplayName(ctx, u, name); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.users.SetAvatarURL(ctx, "@bob:test", "mxc://test/bob"); err != nil {
			t.Fatal(err)
		}
		// bob shares a private room with alice; carol is in a public room;
		// dave is in a private room of his own.
		res, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "private_chat", Invite: []string{"@bob:test"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.rooms.Join(ctx, "@bob:test", res.RoomID, ""); err != nil {
			t.Fatal(err)
		}
		w.room(t, "@carol:test")
		if _, err := w.rooms.CreateRoom(ctx, "@dave:test", roomserver.CreateRoomRequest{Preset: "private_chat"}); err != nil {
			t.Fatal(err)
		}
		w.settle()
		// As for another server's users, this server keeps no profile of them.
		if _, err := w.rooms.DB().Exec(ctx, `DELETE FROM profiles WHERE user_id IN ($1)`, []string{"@bob:test", "@carol:test", "@dave:test"}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ term, want string }{
			{"robert", "@bob:test"},
			{"REMOTE rob", "@bob:test"},
			{"bob", "@bob:test"},
			{"faraway", "@carol:test"},
			{"hidden", ""},
			{"dave", ""},
			{`"robert`, ""},
			{"mxc", ""}, // in the event, but not a name
		} {
			r, err := w.sync.UserDirectory(ctx, "@alice:test", c.term, 10)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, u := range r.Results {
				got = append(got, u.UserID)
			}
			if strings.Join(got, ",") != c.want {
				t.Errorf("%q: got %v, want %q", c.term, got, c.want)
			}
		}
		r, err := w.sync.UserDirectory(ctx, "@alice:test", "robert", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Results) != 1 || r.Results[0].DisplayName == nil || *r.Results[0].DisplayName != "Robert Remote" ||
			r.Results[0].AvatarURL == nil || *r.Results[0].AvatarURL != "mxc://test/bob" {
			t.Fatalf("bob's entry: %+v", r.Results)
		}
	})
}
