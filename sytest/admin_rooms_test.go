package sytest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const adm = "/_synapse/admin"

// TestAdminRoomsAPI: every room, media and statistics endpoint of the
// admin API answers an admin and refuses anyone else (403 M_FORBIDDEN),
// and bad input gets the right Matrix error, never a 500.
func TestAdminRoomsAPI(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		admin := s.registerAdmin(t, "boss")
		alice := s.register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Plans", Preset: "public_chat", RoomAliasName: "plans", Visibility: "public"})
		msg := sendText(t, alice, room, "hello")
		up, err := alice.UploadBytesWithName(ctx, []byte("some text"), "text/plain", "note.txt")
		if err != nil {
			t.Fatal(err)
		}
		media := up.ContentURI.FileID
		r := p(room)

		type call struct {
			method, path string
			body         any
			status       int // for the admin
		}
		for _, c := range []call{
			{"GET", "/v1/rooms", nil, 200},
			{"GET", "/v1/rooms/" + r, nil, 200},
			{"GET", "/v1/rooms/" + r + "/members", nil, 200},
			{"GET", "/v1/rooms/" + r + "/state", nil, 200},
			{"GET", "/v1/rooms/" + r + "/block", nil, 200},
			{"PUT", "/v1/rooms/" + p("!other:localhost") + "/block", map[string]any{"block": false}, 200},
			{"GET", "/v1/room/" + r + "/media", nil, 200},
			{"GET", "/v1/users/" + p(alice.UserID) + "/media", nil, 200},
			{"POST", "/v1/media/unquarantine/localhost/" + media, map[string]any{}, 200},
			{"POST", "/v1/purge_media_cache?before_ts=1735689600000", map[string]any{}, 200},
			{"GET", "/v1/statistics/users/media", nil, 200},
			{"GET", "/v1/statistics/database/rooms", nil, 200},
			{"GET", "/v1/statistics/server", nil, 200},
			{"GET", "/v2/rooms/delete_status/nope", nil, 404},
			{"GET", "/v2/rooms/" + r + "/delete_status", nil, 404},
			{"GET", "/v1/purge_history_status/nope", nil, 404},
			// Changes last (the non-admin attempts come first and do nothing).
			{"POST", "/v1/purge_history/" + r + "/" + p(msg), map[string]any{}, 200},
			{"POST", "/v1/media/quarantine/localhost/" + media, map[string]any{}, 200},
			{"POST", "/v1/room/" + r + "/media/quarantine", map[string]any{}, 200},
			{"POST", "/v1/user/" + p(alice.UserID) + "/media/quarantine", map[string]any{}, 200},
			{"DELETE", "/v1/media/localhost/" + media, nil, 200},
			{"DELETE", "/v1/users/" + p(alice.UserID) + "/media", nil, 200},
			{"DELETE", "/v2/rooms/" + p("!unknown:localhost"), map[string]any{"block": true}, 200},
			{"DELETE", "/v1/rooms/" + p("!unknown2:localhost"), map[string]any{"block": true}, 200},
		} {
			t.Run(c.method+" "+c.path, func(t *testing.T) {
				s.do(t, c.method, adm+c.path, alice.AccessToken, c.body).expectErr(t, 403, "M_FORBIDDEN")
				s.do(t, c.method, adm+c.path, "", c.body).expectErr(t, 401, "M_MISSING_TOKEN")
				s.do(t, c.method, adm+c.path, admin.AccessToken, c.body).expect(t, c.status)
			})
		}

		// Bad input.
		for _, c := range []struct {
			method, path string
			body         any
			status       int
			errcode      string
		}{
			{"GET", "/v1/rooms?limit=0", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/v1/rooms?from=-1", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/v1/rooms?order_by=colour", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/v1/rooms?dir=up", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/v1/rooms/nonsense", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/v1/rooms/" + p("!nope:localhost"), nil, 404, "M_NOT_FOUND"},
			{"GET", "/v1/rooms/" + p("!nope:localhost") + "/members", nil, 404, "M_NOT_FOUND"},
			{"GET", "/v1/rooms/" + p("!nope:localhost") + "/state", nil, 404, "M_NOT_FOUND"},
			{"GET", "/v1/rooms/" + p("!a\x00b:localhost"), nil, 400, "M_INVALID_PARAM"},
			{"PUT", "/v1/rooms/" + r + "/block", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"PUT", "/v1/rooms/" + r + "/block", map[string]any{"block": "yes"}, 400, "M_BAD_JSON"},
			{"PUT", "/v1/rooms/" + r + "/block", "{", 400, "M_NOT_JSON"},
			{"DELETE", "/v1/rooms/" + p("!nope:localhost"), map[string]any{}, 404, "M_NOT_FOUND"},
			{"DELETE", "/v1/rooms/" + r, map[string]any{"new_room_user_id": "@someone:elsewhere"}, 400, "M_INVALID_PARAM"},
			{"DELETE", "/v2/rooms/" + r, map[string]any{"purge": "no"}, 400, "M_BAD_JSON"},
			{"POST", "/v1/purge_history/" + r, map[string]any{}, 400, "M_MISSING_PARAM"},
			{"POST", "/v1/purge_history/" + r, map[string]any{"purge_up_to_ts": -5}, 400, "M_INVALID_PARAM"},
			{"POST", "/v1/purge_history/" + r + "/" + p("$nope"), map[string]any{}, 404, "M_NOT_FOUND"},
			{"POST", "/v1/purge_history/" + p("!nope:localhost"), map[string]any{"purge_up_to_ts": 5}, 404, "M_NOT_FOUND"},
			{"GET", "/v1/users/" + p("@nobody:localhost") + "/media", nil, 404, "M_NOT_FOUND"},
			{"GET", "/v1/users/" + p("@x:elsewhere") + "/media", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/v1/users/nonsense/media", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/v1/users/" + p(alice.UserID) + "/media?order_by=colour", nil, 400, "M_INVALID_PARAM"},
			{"POST", "/v1/media/quarantine/localhost/" + p("bad id!"), map[string]any{}, 400, "M_INVALID_PARAM"},
			{"POST", "/v1/media/quarantine/localhost/unknownmedia", map[string]any{}, 404, "M_NOT_FOUND"},
			{"DELETE", "/v1/media/elsewhere.example/abc", nil, 400, "M_INVALID_PARAM"},
			{"DELETE", "/v1/media/localhost/unknownmedia", nil, 404, "M_NOT_FOUND"},
			{"POST", "/v1/room/" + p("!nope:localhost") + "/media/quarantine", map[string]any{}, 404, "M_NOT_FOUND"},
			{"POST", "/v1/purge_media_cache", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"POST", "/v1/purge_media_cache?before_ts=soon", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"GET", "/v1/statistics/users/media?order_by=colour", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/v1/statistics/users/media?from_ts=x", nil, 400, "M_INVALID_PARAM"},
			{"GET", "/v1/statistics/server?days=1000", nil, 400, "M_INVALID_PARAM"},
		} {
			t.Run("bad "+c.method+" "+c.path, func(t *testing.T) {
				s.do(t, c.method, adm+c.path, admin.AccessToken, c.body).expectErr(t, c.status, c.errcode)
			})
		}
	})
}

// TestAdminRoomListAndDetails: the room list pages, sorts and searches as
// Synapse's does; details, members and state describe the room.
func TestAdminRoomListAndDetails(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		admin := s.registerAdmin(t, "boss")
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		big := createRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Big room", Preset: "public_chat", RoomAliasName: "big"})
		join(t, bob, big.String())
		small := createRoom(t, bob, &mautrix.ReqCreateRoom{Name: "Another one", Preset: "private_chat"})
		_ = small

		list := s.do(t, "GET", adm+"/v1/rooms?order_by=name", admin.AccessToken, nil).expect(t, 200)
		rooms, _ := list.JSON["rooms"].([]any)
		if list.JSON["total_rooms"] != float64(2) || len(rooms) != 2 || rooms[0].(map[string]any)["name"] != "Another one" {
			t.Fatalf("by name: %s", list)
		}
		list = s.do(t, "GET", adm+"/v1/rooms?order_by=joined_members&limit=1", admin.AccessToken, nil).expect(t, 200)
		rooms, _ = list.JSON["rooms"].([]any)
		first := rooms[0].(map[string]any)
		if len(rooms) != 1 || first["room_id"] != big.String() || first["joined_members"] != float64(2) ||
			first["joined_local_members"] != float64(2) || first["canonical_alias"] != "#big:localhost" ||
			first["join_rules"] != "public" || first["creator"] != alice.UserID.String() || list.JSON["next_batch"] != float64(1) {
			t.Fatalf("by members: %s", list)
		}
		list = s.do(t, "GET", adm+"/v1/rooms?from=1&limit=1&order_by=joined_members", admin.AccessToken, nil).expect(t, 200)
		if list.JSON["prev_batch"] != float64(0) || list.JSON["next_batch"] != nil || list.JSON["offset"] != float64(1) {
			t.Fatalf("second page: %s", list)
		}
		list = s.do(t, "GET", adm+"/v1/rooms?search_term=BIG", admin.AccessToken, nil).expect(t, 200)
		if list.JSON["total_rooms"] != float64(1) {
			t.Fatalf("search: %s", list)
		}

		d := s.do(t, "GET", adm+"/v1/rooms/"+p(big), admin.AccessToken, nil).expect(t, 200)
		if d.JSON["name"] != "Big room" || d.JSON["joined_local_devices"] != float64(2) || d.JSON["public"] != false {
			t.Fatalf("details: %s", d)
		}
		m := s.do(t, "GET", adm+"/v1/rooms/"+p(big)+"/members", admin.AccessToken, nil).expect(t, 200)
		if m.JSON["total"] != float64(2) {
			t.Fatalf("members: %s", m)
		}
		st := s.do(t, "GET", adm+"/v1/rooms/"+p(big)+"/state", admin.AccessToken, nil).expect(t, 200)
		evs, _ := st.JSON["state"].([]any)
		if len(evs) < 5 || !strings.Contains(string(st.Raw), `"m.room.create"`) {
			t.Fatalf("state: %s", st)
		}

		stats := s.do(t, "GET", adm+"/v1/statistics/server?days=7", admin.AccessToken, nil).expect(t, 200)
		if stats.JSON["total_users"] != float64(3) || stats.JSON["total_rooms"] != float64(2) || stats.JSON["daily_active_users"] == float64(0) {
			t.Fatalf("server statistics: %s", stats)
		}
		if days, _ := stats.JSON["messages_per_day"].([]any); len(days) != 7 {
			t.Fatalf("messages per day: %s", stats)
		}
		if size, _ := stats.JSON["database_size_bytes"].(float64); size <= 0 {
			t.Fatalf("database size: %s", stats)
		}
		dbr := s.do(t, "GET", adm+"/v1/statistics/database/rooms", admin.AccessToken, nil).expect(t, 200)
		if l, _ := dbr.JSON["rooms"].([]any); len(l) != 2 {
			t.Fatalf("database rooms: %s", dbr)
		}
	})
}

// TestAdminRoomShutdown: a shut-down room loses its local members, who
// cannot come back, and leaves the directory; they find themselves in the
// notice room. v2 runs in the background and purges the room.
func TestAdminRoomShutdown(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		admin := s.registerAdmin(t, "boss")
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Bad place", Preset: "public_chat", RoomAliasName: "bad", Visibility: "public"})
		join(t, bob, room.String())
		sendText(t, bob, room, "something bad")
		pub, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil || len(pub.Chunk) != 1 {
			t.Fatalf("directory before: %+v %v", pub, err)
		}

		res := s.do(t, "DELETE", adm+"/v1/rooms/"+p(room), admin.AccessToken, map[string]any{
			"new_room_user_id": admin.UserID, "room_name": "Closed", "message": "This room was closed.", "block": true, "purge": false,
		}).expect(t, 200)
		kicked := fmt.Sprint(res.JSON["kicked_users"])
		newRoom := res.str("new_room_id")
		if !strings.Contains(kicked, alice.UserID.String()) || !strings.Contains(kicked, bob.UserID.String()) || newRoom == "" ||
			fmt.Sprint(res.JSON["local_aliases"]) != "[#bad:localhost]" {
			t.Fatalf("shutdown: %s", res)
		}
		for _, cli := range []*mautrix.Client{alice, bob} {
			rooms, err := cli.JoinedRooms(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rooms.JoinedRooms) != 1 || rooms.JoinedRooms[0].String() != newRoom {
				t.Fatalf("%s is in %v, want only the notice room %s", cli.UserID, rooms.JoinedRooms, newRoom)
			}
			_, err = cli.JoinRoomByID(ctx, room)
			mustErr(t, "rejoin a blocked room", err, 403, "M_FORBIDDEN")
		}
		_, err = alice.JoinRoom(ctx, "#bad:localhost", nil)
		if err != nil {
			t.Fatalf("the alias should lead to the notice room: %v", err)
		}
		msgs := allMessages(t, bob, id.RoomID(newRoom))
		if !strings.Contains(fmt.Sprint(bodies(msgs)), "This room was closed.") {
			t.Fatalf("notice room messages: %v", bodies(msgs))
		}
		pub, err = bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range pub.Chunk {
			if c.RoomID == room {
				t.Fatalf("the room is still in the directory")
			}
		}
		blk := s.do(t, "GET", adm+"/v1/rooms/"+p(room)+"/block", admin.AccessToken, nil).expect(t, 200)
		if blk.JSON["block"] != true || blk.str("user_id") != admin.UserID.String() {
			t.Fatalf("block: %s", blk)
		}
		s.do(t, "PUT", adm+"/v1/rooms/"+p(room)+"/block", admin.AccessToken, map[string]any{"block": false}).expect(t, 200)
		s.do(t, "GET", adm+"/v1/rooms/"+p(room)+"/block", admin.AccessToken, nil).expect(t, 200)

		// v2 in the background, with the purge.
		carol := s.register(t, "carol")
		other := createRoom(t, carol, &mautrix.ReqCreateRoom{Name: "Other", Preset: "public_chat"})
		sendText(t, carol, other, "hi")
		del := s.do(t, "DELETE", adm+"/v2/rooms/"+p(other), admin.AccessToken, map[string]any{"block": true}).expect(t, 200)
		deleteID := del.str("delete_id")
		if deleteID == "" {
			t.Fatalf("v2 delete: %s", del)
		}
		eventually(t, "the deletion to complete", func() bool {
			st := s.do(t, "GET", adm+"/v2/rooms/delete_status/"+deleteID, admin.AccessToken, nil).expect(t, 200)
			if st.str("status") == "failed" {
				t.Fatalf("deletion failed: %s", st)
			}
			return st.str("status") == "complete"
		})
		st := s.do(t, "GET", adm+"/v2/rooms/"+p(other)+"/delete_status", admin.AccessToken, nil).expect(t, 200)
		if !strings.Contains(string(st.Raw), deleteID) || !strings.Contains(string(st.Raw), carol.UserID.String()) {
			t.Fatalf("room delete status: %s", st)
		}
		s.do(t, "GET", adm+"/v1/rooms/"+p(other), admin.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		_, err = carol.JoinRoomByID(ctx, other)
		mustErr(t, "join a deleted room", err, 403, "M_FORBIDDEN")
		// carol's sync still works and no longer lists the room as joined.
		resp, _ := syncNow(t, carol, "")
		if _, ok := resp.Rooms.Join[other]; ok {
			t.Fatalf("the purged room is still in carol's sync")
		}
	})
}

// TestAdminPurgeHistory: purged messages disappear from /messages and
// /sync for everyone; the room's state and later messages stay.
func TestAdminPurgeHistory(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		admin := s.registerAdmin(t, "boss")
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Name: "History", Preset: "public_chat"})
		join(t, bob, room.String())
		for i := 0; i < 5; i++ {
			sendText(t, alice, room, fmt.Sprintf("old %d", i))
		}
		// The point: the first message sent after it stays.
		keep := sendText(t, bob, room, "new 0")
		sendText(t, alice, room, "new 1")
		// Warm the caches: a sync and /messages before the purge.
		syncNow(t, bob, "")
		allMessages(t, bob, room)

		pr := s.do(t, "POST", adm+"/v1/purge_history/"+p(room), admin.AccessToken, map[string]any{
			"purge_up_to_event_id": keep, "delete_local_events": true,
		}).expect(t, 200)
		purgeID := pr.str("purge_id")
		eventually(t, "the purge to complete", func() bool {
			st := s.do(t, "GET", adm+"/v1/purge_history_status/"+purgeID, admin.AccessToken, nil).expect(t, 200)
			if st.str("status") == "failed" {
				t.Fatalf("purge failed: %s", st)
			}
			return st.str("status") == "complete"
		})
		for _, cli := range []*mautrix.Client{alice, bob} {
			got := fmt.Sprint(bodies(allMessages(t, cli, room)))
			if strings.Contains(got, "old") || !strings.Contains(got, "new 0") || !strings.Contains(got, "new 1") {
				t.Fatalf("%s's /messages after the purge: %s", cli.UserID, got)
			}
			resp, _ := syncNow(t, cli, "")
			jr, ok := resp.Rooms.Join[room]
			if !ok {
				t.Fatalf("%s no longer sees the room", cli.UserID)
			}
			for _, ev := range jr.Timeline.Events {
				if ev.Type == event.EventMessage && strings.HasPrefix(fmt.Sprint(ev.Content.Raw["body"]), "old") {
					t.Fatalf("%s's sync still has %v", cli.UserID, ev.Content.Raw["body"])
				}
			}
		}
		// The room works as before: state is intact and new messages flow.
		var name event.RoomNameEventContent
		if err := bob.StateEvent(ctx, room, event.StateRoomName, "", &name); err != nil || name.Name != "History" {
			t.Fatalf("room name after the purge: %q %v", name.Name, err)
		}
		sendText(t, bob, room, "after")
		got := fmt.Sprint(bodies(allMessages(t, alice, room)))
		if !strings.Contains(got, "after") {
			t.Fatalf("messages after: %s", got)
		}

		// By time, keeping local users' events unless asked.
		before := time.Now().UnixMilli() + 1
		r := s.do(t, "POST", adm+"/v1/purge_history/"+p(room), admin.AccessToken, map[string]any{"purge_up_to_ts": before}).expect(t, 200)
		eventually(t, "the second purge", func() bool {
			return s.do(t, "GET", adm+"/v1/purge_history_status/"+r.str("purge_id"), admin.AccessToken, nil).str("status") == "complete"
		})
		if got := fmt.Sprint(bodies(allMessages(t, alice, room))); !strings.Contains(got, "after") {
			t.Fatalf("local events went without delete_local_events: %s", got)
		}
	})
}

// TestAdminMediaQuarantine: quarantined media is not served (404); lifting
// the quarantine serves it again; a room's media is quarantined together;
// deleted media is gone; a user's media is listed.
func TestAdminMediaQuarantine(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		admin := s.registerAdmin(t, "boss")
		alice := s.register(t, "alice")
		up, err := alice.UploadBytesWithName(ctx, []byte("plain words"), "text/plain", "a.txt")
		if err != nil {
			t.Fatal(err)
		}
		mid := up.ContentURI.FileID
		dl := "/_matrix/client/v1/media/download/localhost/" + mid
		s.do(t, "GET", dl, alice.AccessToken, nil).expect(t, 200)
		s.do(t, "POST", adm+"/v1/media/quarantine/localhost/"+mid, admin.AccessToken, map[string]any{}).expect(t, 200)
		s.do(t, "GET", dl, alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", "/_matrix/client/v1/media/thumbnail/localhost/"+mid+"?width=32&height=32", alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		list := s.do(t, "GET", adm+"/v1/users/"+p(alice.UserID)+"/media", admin.AccessToken, nil).expect(t, 200)
		if list.JSON["total"] != float64(1) || !strings.Contains(string(list.Raw), `"quarantined_by":"`+admin.UserID.String()) ||
			!strings.Contains(string(list.Raw), `"upload_name":"a.txt"`) {
			t.Fatalf("user media: %s", list)
		}
		s.do(t, "POST", adm+"/v1/media/unquarantine/localhost/"+mid, admin.AccessToken, map[string]any{}).expect(t, 200)
		s.do(t, "GET", dl, alice.AccessToken, nil).expect(t, 200)

		// A room's media.
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if _, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.file", "body": "a.txt", "url": up.ContentURI.CUString()}); err != nil {
			t.Fatal(err)
		}
		rm := s.do(t, "GET", adm+"/v1/room/"+p(room)+"/media", admin.AccessToken, nil).expect(t, 200)
		if fmt.Sprint(rm.JSON["local"]) != "[mxc://localhost/"+mid+"]" {
			t.Fatalf("room media: %s", rm)
		}
		q := s.do(t, "POST", adm+"/v1/room/"+p(room)+"/media/quarantine", admin.AccessToken, map[string]any{}).expect(t, 200)
		if q.JSON["num_quarantined"] != float64(1) {
			t.Fatalf("room quarantine: %s", q)
		}
		s.do(t, "GET", dl, alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")

		stats := s.do(t, "GET", adm+"/v1/statistics/users/media", admin.AccessToken, nil).expect(t, 200)
		if stats.JSON["total"] != float64(1) || !strings.Contains(string(stats.Raw), `"media_count":1`) {
			t.Fatalf("media statistics: %s", stats)
		}

		// Deleted.
		del := s.do(t, "DELETE", adm+"/v1/media/localhost/"+mid, admin.AccessToken, nil).expect(t, 200)
		if del.JSON["total"] != float64(1) {
			t.Fatalf("delete: %s", del)
		}
		s.do(t, "POST", adm+"/v1/media/unquarantine/localhost/"+mid, admin.AccessToken, map[string]any{}).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", dl, alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		list = s.do(t, "GET", adm+"/v1/users/"+p(alice.UserID)+"/media", admin.AccessToken, nil).expect(t, 200)
		if list.JSON["total"] != float64(0) {
			t.Fatalf("user media after delete: %s", list)
		}
	})
}
