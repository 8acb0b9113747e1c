package roomserver

import (
	"context"
	"slices"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// TestJoinedServers: the servers of the joined members, once each; an
// invited, left or kicked user's server counts only while another of its
// users is joined.
func TestJoinedServers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := res.RoomID
		want := func(exp ...string) {
			t.Helper()
			got, err := h.s.JoinedServers(ctx, roomID)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, exp) {
				t.Fatalf("joined servers %v, want %v", got, exp)
			}
		}
		// remote inputs a membership event as one from another server
		// arrives (its sender may be ours: an invite of a remote user).
		remote := func(sender, user, membership string) {
			t.Helper()
			ext, err := h.s.Extremities(ctx, roomID)
			if err != nil {
				t.Fatal(err)
			}
			pdu := buildOn(t, h, roomID, sender, ext[0], "m.room.member", &user, `{"membership":"`+membership+`"}`)
			if _, err := h.s.InputEvent(ctx, pdu); err != nil {
				t.Fatalf("%s %s: %v", user, membership, err)
			}
		}
		want("test")
		if _, err := h.s.Join(ctx, "@bob:test", roomID, ""); err != nil {
			t.Fatal(err)
		}
		want("test")
		remote("@carol:remote.example", "@carol:remote.example", "join")
		remote("@dave:remote.example", "@dave:remote.example", "join")
		remote("@erin:other.example:8448", "@erin:other.example:8448", "join")
		remote("@alice:test", "@frank:third.example", "invite")
		want("other.example:8448", "remote.example", "test")
		remote("@erin:other.example:8448", "@erin:other.example:8448", "leave")
		if err := h.s.Kick(ctx, "@alice:test", roomID, "@carol:remote.example", ""); err != nil {
			t.Fatal(err)
		}
		want("remote.example", "test")
		if err := h.s.Ban(ctx, "@alice:test", roomID, "@dave:remote.example", ""); err != nil {
			t.Fatal(err)
		}
		want("test")
		if got, err := h.s.JoinedServers(ctx, "!unknown:test"); err != nil || len(got) != 0 {
			t.Fatalf("unknown room: %v %v", got, err)
		}
	})
}
