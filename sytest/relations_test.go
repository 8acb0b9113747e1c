package sytest

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func sendContent(t *testing.T, cli *mautrix.Client, room id.RoomID, typ event.Type, content map[string]any) id.EventID {
	t.Helper()
	resp, err := cli.SendMessageEvent(context.Background(), room, typ, content)
	if err != nil {
		t.Fatalf("send %s by %s: %v", typ.Type, cli.UserID, err)
	}
	return resp.EventID
}

// TestRelationsThreadEditReaction: a reply in a thread gives the root an
// m.thread aggregation (count, latest event) and lists it in /threads; an
// edit gives m.replace; a reaction is listed by /relations. All of it also
// in /sync and /messages, as Element reads it.
func TestRelationsThreadEditReaction(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		join(t, bob, room.String())
		root := sendText(t, alice, room, "Lunch at noon?")
		reply := sendContent(t, bob, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "Yes!",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root, "is_falling_back": true, "m.in_reply_to": map[string]any{"event_id": root}}})
		edit := sendContent(t, alice, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "* Lunch at one?",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "Lunch at one?"}, "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": root}})
		reaction := sendContent(t, bob, room, event.EventReaction, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👍"}})

		// GET /event bundles the aggregations.
		ev, err := bob.GetEvent(ctx, room, root)
		if err != nil {
			t.Fatal(err)
		}
		rel := ev.Unsigned.Relations
		if rel == nil || rel.Thread == nil || rel.Thread.Count != 1 || rel.Thread.LatestEvent == nil || rel.Thread.LatestEvent.ID != reply || !rel.Thread.CurrentUserParticipated {
			t.Fatalf("m.thread of the root: %+v", rel)
		}
		if rel.LatestEdit == nil || rel.LatestEdit.ID != edit || rel.LatestEdit.Sender != alice.UserID {
			t.Fatalf("m.replace of the root: %+v", rel.LatestEdit)
		}
		// So does /sync (an initial sync of a new device) ...
		other := s.login(t, "bob")
		r, _ := s.rawSync(t, other, nil)
		var inSync *event.Event
		if jr := r.Rooms.Join[room]; jr != nil {
			for _, e := range jr.Timeline.Events {
				if e.ID == root {
					inSync = e
				}
			}
		}
		if inSync == nil || inSync.Unsigned.Relations == nil || inSync.Unsigned.Relations.Thread.GetCount() != 1 {
			t.Fatalf("root in /sync: %+v", inSync)
		}
		// ... and /messages.
		found := false
		for _, e := range allMessages(t, bob, room) {
			if e.ID == root {
				found = e.Unsigned.Relations != nil && e.Unsigned.Relations.Thread.GetCount() == 1 && e.Unsigned.Relations.LatestEdit != nil
			}
		}
		if !found {
			t.Fatal("root in /messages without its aggregations")
		}
		// A second reply, after the root was served: the count follows.
		sendText(t, alice, room, "an unrelated message")
		reply3 := sendContent(t, alice, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "Great",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		eventually(t, "the thread count to follow", func() bool {
			ev, err := bob.GetEvent(ctx, room, root)
			return err == nil && ev.Unsigned.Relations != nil && ev.Unsigned.Relations.Thread.GetCount() == 2 && ev.Unsigned.Relations.Thread.LatestEvent.ID == reply3
		})

		// /relations: everything, then only annotations.
		all, err := bob.GetRelations(ctx, room, root, &mautrix.ReqGetRelations{})
		if err != nil || len(all.Chunk) != 4 {
			t.Fatalf("relations: %+v %v", all, err)
		}
		ann, err := bob.GetRelations(ctx, room, root, &mautrix.ReqGetRelations{RelationType: event.RelAnnotation})
		if err != nil || len(ann.Chunk) != 1 || ann.Chunk[0].ID != reaction {
			t.Fatalf("annotations: %+v %v", ann, err)
		}
		page, err := bob.GetRelations(ctx, room, root, &mautrix.ReqGetRelations{Limit: 3})
		if err != nil || len(page.Chunk) != 3 || page.NextBatch == "" {
			t.Fatalf("first page: %+v %v", page, err)
		}
		page, err = bob.GetRelations(ctx, room, root, &mautrix.ReqGetRelations{Limit: 3, From: page.NextBatch})
		if err != nil || len(page.Chunk) != 1 || page.Chunk[0].ID != reply {
			t.Fatalf("second page: %+v %v", page, err)
		}

		// /threads lists the root, for include=all and participated.
		for _, include := range []string{"all", "participated"} {
			th := s.do(t, "GET", "/_matrix/client/v1/rooms/"+p(room)+"/threads?include="+include, bob.AccessToken, nil).expect(t, 200)
			chunk, _ := th.JSON["chunk"].([]any)
			if len(chunk) != 1 || chunk[0].(map[string]any)["event_id"] != root.String() {
				t.Fatalf("/threads include=%s: %s", include, th)
			}
		}

		// Redacting the latest reply: the thread falls back to the first.
		if _, err := alice.RedactEvent(ctx, room, reply3); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the redacted reply out of the thread", func() bool {
			ev, err := bob.GetEvent(ctx, room, root)
			return err == nil && ev.Unsigned.Relations != nil && ev.Unsigned.Relations.Thread.GetCount() == 1 && ev.Unsigned.Relations.Thread.LatestEvent.ID == reply
		})

		// Errors.
		base := "/_matrix/client/v1/rooms/" + p(room)
		s.do(t, "GET", base+"/relations/"+p(root)+"?dir=x", bob.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", base+"/relations/"+p(root)+"?limit=-1", bob.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", base+"/relations/"+p(root)+"?from=zzz", bob.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		s.do(t, "GET", base+"/relations/$unknown", bob.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", base+"/relations/"+p(root), "", nil).expectErr(t, 401, "M_MISSING_TOKEN")
		s.do(t, "GET", base+"/threads?include=mine", bob.AccessToken, nil).expectErr(t, 400, "M_INVALID_PARAM")
		stranger := s.register(t, "mallory")
		s.do(t, "GET", base+"/relations/"+p(root), stranger.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", base+"/threads", stranger.AccessToken, nil).expectErr(t, 403, "M_FORBIDDEN")
	})
}
