package sytest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TestAdminRoomMessages: an admin reads any room's history, member or not,
// whatever its history visibility; paging with from/to/dir/limit/filter.
func TestAdminRoomMessages(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		admin := s.registerAdmin(t, "boss")
		alice := s.register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		var sent []string
		for i := 0; i < 5; i++ {
			sent = append(sent, sendText(t, alice, room, fmt.Sprintf("m%d", i)).String())
		}
		path := adm + "/v1/rooms/" + p(room) + "/messages"
		s.do(t, "GET", path, alice.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
		s.do(t, "GET", path, "", nil).expectErr(t, 401, "M_MISSING_TOKEN")

		bodies := func(r apiResp) []string {
			var out []string
			for _, e := range r.JSON["chunk"].([]any) {
				ev := e.(map[string]any)
				if ev["type"] == "m.room.message" {
					out = append(out, ev["content"].(map[string]any)["body"].(string))
				}
			}
			return out
		}
		// Forwards by default, from the room's start: the creation first.
		r := s.do(t, "GET", path+"?limit=100", admin.AccessToken, nil).expect(t, 200)
		chunk := r.JSON["chunk"].([]any)
		if chunk[0].(map[string]any)["type"] != "m.room.create" || strings.Join(bodies(r), ",") != "m0,m1,m2,m3,m4" {
			t.Fatalf("forwards: %s", r)
		}
		// Backwards, two at a time, to the end.
		r = s.do(t, "GET", path+"?dir=b&limit=2&filter="+p(`{"types":["m.room.message"]}`), admin.AccessToken, nil).expect(t, 200)
		if strings.Join(bodies(r), ",") != "m4,m3" || r.str("end") == "" {
			t.Fatalf("backwards page 1: %s", r)
		}
		r = s.do(t, "GET", path+"?dir=b&limit=2&from="+p(r.str("end"))+"&filter="+p(`{"types":["m.room.message"]}`), admin.AccessToken, nil).expect(t, 200)
		if strings.Join(bodies(r), ",") != "m2,m1" {
			t.Fatalf("backwards page 2: %s", r)
		}
		// Bad input, unknown rooms.
		s.do(t, "GET", path+"?dir=x", admin.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", path+"?limit=-1", admin.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", path+"?filter=nope", admin.AccessToken, nil).expect(t, 400)
		s.do(t, "GET", adm+"/v1/rooms/"+p("!nope:localhost")+"/messages", admin.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", adm+"/v1/rooms/nope/messages", admin.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		_ = sent
	})
}

// TestAdminMediaProtectAndCleanUp: protected media survives quarantine and
// the date-based clean-up; avatars are kept unless keep_profiles=false.
func TestAdminMediaProtectAndCleanUp(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		admin := s.registerAdmin(t, "boss")
		alice := s.register(t, "alice")
		upload := func(text string) string {
			up, err := alice.UploadBytesWithName(ctx, []byte(text), "text/plain", "a.txt")
			if err != nil {
				t.Fatal(err)
			}
			return up.ContentURI.FileID
		}
		kept, plain, big, avatar := upload("kept"), upload("plain"), upload(strings.Repeat("big ", 100)), upload("avatar")
		avatarURI, err := id.ParseContentURI("mxc://localhost/" + avatar)
		if err != nil {
			t.Fatal(err)
		}
		if err := alice.SetAvatarURL(ctx, avatarURI); err != nil {
			t.Fatal(err)
		}
		dl := func(id string) string { return "/_matrix/client/v1/media/download/localhost/" + id }

		for _, c := range []struct{ path string }{{"/v1/media/protect/" + kept}, {"/v1/media/unprotect/" + plain}, {"/v1/media/delete?before_ts=40000000000"}} {
			s.do(t, "POST", adm+c.path, alice.AccessToken, map[string]any{}).expectErr(t, 403, "M_FORBIDDEN")
		}
		s.do(t, "POST", adm+"/v1/media/protect/"+kept, admin.AccessToken, map[string]any{}).expect(t, 200)
		s.do(t, "POST", adm+"/v1/media/protect/nope", admin.AccessToken, map[string]any{}).expectErr(t, 404, "M_NOT_FOUND")
		list := s.do(t, "GET", adm+"/v1/users/"+p(alice.UserID)+"/media?order_by=safe_from_quarantine&dir=b", admin.AccessToken, nil).expect(t, 200)
		if first := list.JSON["media"].([]any)[0].(map[string]any); first["media_id"] != kept || first["safe_from_quarantine"] != true {
			t.Fatalf("listing: %s", list)
		}
		// Quarantine, one by one and of the whole user: the protected one stays.
		s.do(t, "POST", adm+"/v1/media/quarantine/localhost/"+kept, admin.AccessToken, map[string]any{}).expect(t, 200)
		q := s.do(t, "POST", adm+"/v1/user/"+p(alice.UserID)+"/media/quarantine", admin.AccessToken, map[string]any{}).expect(t, 200)
		if q.JSON["num_quarantined"] != float64(3) {
			t.Fatalf("user quarantine: %s", q)
		}
		s.do(t, "GET", dl(kept), alice.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", dl(plain), alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		for _, id := range []string{plain, big, avatar} {
			s.do(t, "POST", adm+"/v1/media/unquarantine/localhost/"+id, admin.AccessToken, map[string]any{}).expect(t, 200)
		}

		// The clean-up: bad input first.
		s.do(t, "POST", adm+"/v1/media/delete", admin.AccessToken, map[string]any{}).expectErr(t, 400, "M_MISSING_PARAM")
		s.do(t, "POST", adm+"/v1/media/delete?before_ts=1700000000", admin.AccessToken, map[string]any{}).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "POST", adm+"/v1/media/delete?before_ts=x", admin.AccessToken, map[string]any{}).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "POST", adm+"/v1/media/other.example/delete?before_ts=40000000000", admin.AccessToken, map[string]any{}).expectErr(t, 400, "M_INVALID_PARAM")
		future := fmt.Sprint(time.Now().Add(time.Hour).UnixMilli())
		// Nothing uploaded before 1971 (in ms).
		d := s.do(t, "POST", adm+"/v1/media/delete?before_ts=40000000000", admin.AccessToken, map[string]any{}).expect(t, 200)
		if d.JSON["total"] != float64(0) {
			t.Fatalf("old: %s", d)
		}
		// Larger than 100 bytes only.
		d = s.do(t, "POST", adm+"/v1/media/localhost/delete?before_ts="+future+"&size_gt=100", admin.AccessToken, map[string]any{}).expect(t, 200)
		if fmt.Sprint(d.JSON["deleted_media"]) != "["+big+"]" {
			t.Fatalf("size_gt: %s", d)
		}
		// The rest but the protected media and the avatar.
		d = s.do(t, "POST", adm+"/v1/media/delete?before_ts="+future, admin.AccessToken, map[string]any{}).expect(t, 200)
		if fmt.Sprint(d.JSON["deleted_media"]) != "["+plain+"]" {
			t.Fatalf("clean-up: %s", d)
		}
		s.do(t, "GET", dl(kept), alice.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", dl(avatar), alice.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", dl(plain), alice.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		d = s.do(t, "POST", adm+"/v1/media/delete?keep_profiles=false&before_ts="+future, admin.AccessToken, map[string]any{}).expect(t, 200)
		if fmt.Sprint(d.JSON["deleted_media"]) != "["+avatar+"]" {
			t.Fatalf("keep_profiles=false: %s", d)
		}
		// Unprotected, it goes too.
		s.do(t, "POST", adm+"/v1/media/unprotect/"+kept, admin.AccessToken, map[string]any{}).expect(t, 200)
		d = s.do(t, "POST", adm+"/v1/media/delete?before_ts="+future, admin.AccessToken, map[string]any{}).expect(t, 200)
		raw, _ := json.Marshal(d.JSON["deleted_media"])
		if string(raw) != `["`+kept+`"]` {
			t.Fatalf("after unprotect: %s", d)
		}
		// Every call is in the audit log.
		au := s.do(t, "GET", adm+"/v1/audit?action=admin.media.", admin.AccessToken, nil).expect(t, 200)
		for _, a := range []string{"admin.media.protect", "admin.media.unprotect", "admin.media.delete_old"} {
			if !strings.Contains(string(au.Raw), a) {
				t.Fatalf("audit lacks %s: %s", a, au)
			}
		}
	})
}

// TestAdminDeleteStatusAfterRestart: a background deletion's status and a
// purge's still answer after the server restarted.
func TestAdminDeleteStatusAfterRestart(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		admin := s.registerAdmin(t, "boss")
		carol := s.register(t, "carol")
		room := createRoom(t, carol, &mautrix.ReqCreateRoom{Name: "Old", Preset: "public_chat"})
		msg := sendText(t, carol, room, "hi")
		kept := createRoom(t, carol, &mautrix.ReqCreateRoom{Name: "Kept", Preset: "public_chat"})
		keptMsg := sendText(t, carol, kept, "hello")
		sendText(t, carol, kept, "after")
		purgeID := s.do(t, "POST", adm+"/v1/purge_history/"+p(kept)+"/"+p(keptMsg), admin.AccessToken, map[string]any{}).expect(t, 200).str("purge_id")
		deleteID := s.do(t, "DELETE", adm+"/v2/rooms/"+p(room), admin.AccessToken, map[string]any{"purge": true}).expect(t, 200).str("delete_id")
		if deleteID == "" || purgeID == "" || msg == "" {
			t.Fatal("no job IDs")
		}
		eventually(t, "the jobs to complete", func() bool {
			d := s.do(t, "GET", adm+"/v2/rooms/delete_status/"+deleteID, admin.AccessToken, nil).expect(t, 200)
			pu := s.do(t, "GET", adm+"/v1/purge_history_status/"+purgeID, admin.AccessToken, nil).expect(t, 200)
			return d.str("status") == "complete" && pu.str("status") == "complete"
		})
		s.restart()
		d := s.do(t, "GET", adm+"/v2/rooms/delete_status/"+deleteID, admin.AccessToken, nil).expect(t, 200)
		if d.str("status") != "complete" || !strings.Contains(string(d.Raw), carol.UserID.String()) {
			t.Fatalf("delete status after restart: %s", d)
		}
		r := s.do(t, "GET", adm+"/v2/rooms/"+p(room)+"/delete_status", admin.AccessToken, nil).expect(t, 200)
		if !strings.Contains(string(r.Raw), deleteID) {
			t.Fatalf("room delete status after restart: %s", r)
		}
		if pu := s.do(t, "GET", adm+"/v1/purge_history_status/"+purgeID, admin.AccessToken, nil).expect(t, 200); pu.str("status") != "complete" {
			t.Fatalf("purge status after restart: %s", pu)
		}
		s.do(t, "GET", adm+"/v2/rooms/delete_status/"+deleteID, carol.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
	})
}
