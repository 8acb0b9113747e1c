package sytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const slidingPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// slidingResp is a sliding sync response as a client reads it.
type slidingResp struct {
	Pos   string `json:"pos"`
	Lists map[string]struct {
		Count int `json:"count"`
	} `json:"lists"`
	Rooms map[string]struct {
		Name          string            `json:"name"`
		Avatar        string            `json:"avatar"`
		Initial       bool              `json:"initial"`
		RequiredState []json.RawMessage `json:"required_state"`
		Timeline      []json.RawMessage `json:"timeline"`
		PrevBatch     string            `json:"prev_batch"`
		Limited       bool              `json:"limited"`
		NumLive       int               `json:"num_live"`
		BumpStamp     int64             `json:"bump_stamp"`
		JoinedCount   int               `json:"joined_count"`
		InvitedCount  int               `json:"invited_count"`
		InviteState   []json.RawMessage `json:"invite_state"`
		Notifications int               `json:"notification_count"`
		Threads       map[string]struct {
			Notifications int `json:"notification_count"`
		} `json:"unread_thread_notifications"`
		IsDM             bool `json:"is_dm"`
		ExpandedTimeline bool `json:"expanded_timeline"`
		Heroes           []struct {
			UserID      string `json:"user_id"`
			DisplayName string `json:"displayname"`
		} `json:"heroes"`
	} `json:"rooms"`
	Extensions struct {
		ToDevice *struct {
			NextBatch string            `json:"next_batch"`
			Events    []json.RawMessage `json:"events"`
		} `json:"to_device"`
		E2EE *struct {
			DeviceLists struct {
				Changed []string `json:"changed"`
				Left    []string `json:"left"`
			} `json:"device_lists"`
			OTKCounts map[string]int `json:"device_one_time_keys_count"`
			Fallback  []string       `json:"device_unused_fallback_key_types"`
		} `json:"e2ee"`
		AccountData *struct {
			Global []json.RawMessage            `json:"global"`
			Rooms  map[string][]json.RawMessage `json:"rooms"`
		} `json:"account_data"`
	} `json:"extensions"`
}

// sliding sends one sliding sync request and decodes its answer.
func (s *server) sliding(t *testing.T, cli *mautrix.Client, pos string, timeout int, body any) slidingResp {
	t.Helper()
	var out slidingResp
	raw := s.slidingInto(t, cli, pos, timeout, body, &out)
	if out.Pos == "" {
		t.Fatalf("no pos: %s", raw)
	}
	return out
}

// slidingInto sends one sliding sync request (timeout 0: none) and
// decodes its 200 answer into out.
func (s *server) slidingInto(t *testing.T, cli *mautrix.Client, pos string, timeout int, body, out any) []byte {
	t.Helper()
	q := url.Values{}
	if pos != "" {
		q.Set("pos", pos)
	}
	if timeout > 0 {
		q.Set("timeout", fmt.Sprint(timeout))
	}
	r := s.do(t, "POST", slidingPath+"?"+q.Encode(), cli.AccessToken, body).expect(t, 200)
	if err := json.Unmarshal(r.Raw, out); err != nil {
		t.Fatalf("sliding sync answer: %v: %s", err, r.Raw)
	}
	return r.Raw
}

// slidingNoT is sliding for another goroutine than the test's.
func (s *server) slidingNoT(cli *mautrix.Client, pos string, timeout int, body any) (slidingResp, error) {
	var out slidingResp
	enc, err := json.Marshal(body)
	if err != nil {
		return out, err
	}
	q := url.Values{"pos": {pos}, "timeout": {fmt.Sprint(timeout)}}
	req, err := http.NewRequest("POST", s.URL+slidingPath+"?"+q.Encode(), bytes.NewReader(enc))
	if err != nil {
		return out, err
	}
	req.Header.Set("Authorization", "Bearer "+cli.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return out, err
	}
	if resp.StatusCode != 200 {
		return out, fmt.Errorf("status %d: %s", resp.StatusCode, raw)
	}
	return out, json.Unmarshal(raw, &out)
}

type slEvent struct {
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key"`
	Sender   string          `json:"sender"`
	Content  json.RawMessage `json:"content"`
	EventID  string          `json:"event_id"`
}

func slEvents(t *testing.T, raws []json.RawMessage) []slEvent {
	t.Helper()
	out := make([]slEvent, len(raws))
	for i, r := range raws {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func slBodies(t *testing.T, raws []json.RawMessage) []string {
	var out []string
	for _, e := range slEvents(t, raws) {
		var c struct {
			Body string `json:"body"`
		}
		if e.Type == "m.room.message" && json.Unmarshal(e.Content, &c) == nil {
			out = append(out, c.Body)
		}
	}
	return out
}

func slStateKeys(t *testing.T, raws []json.RawMessage) []string {
	var out []string
	for _, e := range slEvents(t, raws) {
		out = append(out, e.Type+"|"+*e.StateKey)
	}
	slices.Sort(out)
	return out
}

// TestSlidingSync: simplified sliding sync (MSC4186) — lists by recency
// with ranges and counts, the room fields, required_state, filters,
// room subscriptions, incremental updates woken by a message, unknown pos,
// the to_device, e2ee and account_data extensions, and bad bodies.
func TestSlidingSync(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")

		// Five named rooms, each with a message, oldest first; then an
		// encrypted room, a DM, and an invite from bob.
		var rooms []id.RoomID
		for i := range 5 {
			r := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: fmt.Sprintf("Room %d", i)})
			sendText(t, alice, r, fmt.Sprintf("hello %d", i))
			rooms = append(rooms, r)
		}
		space := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Space", CreationContent: map[string]any{"type": "m.space"}})
		for _, child := range rooms[2:4] {
			if _, err := alice.SendStateEvent(ctx, space, event.StateSpaceChild, child.String(), map[string]any{"via": []string{"localhost"}}); err != nil {
				t.Fatal(err)
			}
		}
		// A child without via is no child.
		if _, err := alice.SendStateEvent(ctx, space, event.StateSpaceChild, rooms[0].String(), map[string]any{}); err != nil {
			t.Fatal(err)
		}
		s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/rooms/"+p(rooms[1])+"/tags/m.favourite", alice.AccessToken, map[string]any{"order": 0.5}).expect(t, 200)
		enc := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret", InitialState: []*event.Event{{
			Type: event.StateEncryption, StateKey: sk(""), Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}})
		dm := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bob.UserID}})
		join(t, bob, dm.String())
		s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/account_data/m.direct", alice.AccessToken, map[string]any{bob.UserID.String(): []string{dm.String()}}).expect(t, 200)
		invited := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Bob's", Invite: []id.UserID{alice.UserID}})
		// rooms[4] gets the newest message of all.
		sendText(t, alice, rooms[4], "newest")

		t.Run("initial lists", func(t *testing.T) {
			r := s.sliding(t, alice, "", 0, map[string]any{"lists": map[string]any{
				"all": map[string]any{"ranges": [][]int{{0, 2}}, "timeline_limit": 1,
					"required_state": [][]string{{"m.room.create", ""}, {"m.room.member", "$ME"}}},
			}})
			if r.Lists["all"].Count != 9 {
				t.Errorf("count %d, want 9 (5 rooms, space, encrypted, DM, invite)", r.Lists["all"].Count)
			}
			// Newest first: rooms[4] (newest message), the invite, the DM.
			for _, want := range []string{rooms[4].String(), invited.String(), dm.String()} {
				if _, ok := r.Rooms[want]; !ok {
					t.Errorf("room %s not sent; got %v", want, keys(r.Rooms))
				}
			}
			if len(r.Rooms) != 3 {
				t.Errorf("%d rooms sent, want 3: %v", len(r.Rooms), keys(r.Rooms))
			}
			top := r.Rooms[rooms[4].String()]
			if top.Name != "Room 4" || !top.Initial || top.JoinedCount != 1 || top.BumpStamp == 0 || top.PrevBatch == "" || !top.Limited {
				t.Errorf("room fields: %+v", top)
			}
			if b := slBodies(t, top.Timeline); !slices.Equal(b, []string{"newest"}) {
				t.Errorf("timeline %v, want [newest]", b)
			}
			if got, want := slStateKeys(t, top.RequiredState), []string{"m.room.create|", "m.room.member|" + alice.UserID.String()}; !slices.Equal(got, want) {
				t.Errorf("required_state %v, want %v", got, want)
			}
			inv := r.Rooms[invited.String()]
			if len(inv.InviteState) == 0 || len(inv.Timeline) != 0 {
				t.Errorf("invite: %+v", inv)
			}
			if d := r.Rooms[dm.String()]; d.BumpStamp >= top.BumpStamp || d.JoinedCount != 2 || !d.IsDM || len(d.Heroes) != 1 ||
				d.Heroes[0].UserID != bob.UserID.String() || d.Heroes[0].DisplayName == "" {
				t.Errorf("dm: %+v (top bump %d)", d, top.BumpStamp)
			}
			if top.IsDM || len(top.Heroes) != 0 {
				t.Errorf("a named room that is no DM: %+v", top)
			}
		})

		t.Run("filters", func(t *testing.T) {
			yes, no := true, false
			cases := []struct {
				name    string
				filters map[string]any
				want    []string
			}{
				{"invites", map[string]any{"is_invite": yes}, []string{invited.String()}},
				{"encrypted", map[string]any{"is_encrypted": yes}, []string{enc.String()}},
				{"dms", map[string]any{"is_dm": yes}, []string{dm.String()}},
				{"joined unencrypted non-DM non-space", map[string]any{"is_invite": no, "is_encrypted": no, "is_dm": no, "not_room_types": []any{"m.space"}}, []string{
					rooms[0].String(), rooms[1].String(), rooms[2].String(), rooms[3].String(), rooms[4].String()}},
				{"spaces", map[string]any{"room_types": []any{"m.space"}}, []string{space.String()}},
				{"untyped joined non-DM", map[string]any{"room_types": []any{nil}, "is_invite": no, "is_dm": no}, []string{
					rooms[0].String(), rooms[1].String(), rooms[2].String(), rooms[3].String(), rooms[4].String(), enc.String()}},
				{"favourites", map[string]any{"tags": []string{"m.favourite"}}, []string{rooms[1].String()}},
				{"in the space", map[string]any{"spaces": []string{space.String()}}, []string{rooms[2].String(), rooms[3].String()}},
				{"in a space the user is not in", map[string]any{"spaces": []string{invited.String()}}, nil},
				{"not favourites", map[string]any{"not_tags": []string{"m.favourite"}, "not_room_types": []any{"m.space"}, "is_invite": no, "is_dm": no, "is_encrypted": no}, []string{
					rooms[0].String(), rooms[2].String(), rooms[3].String(), rooms[4].String()}},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					r := s.sliding(t, alice, "", 0, map[string]any{"lists": map[string]any{
						"l": map[string]any{"ranges": [][]int{{0, 20}}, "timeline_limit": 0, "filters": c.filters}}})
					if r.Lists["l"].Count != len(c.want) {
						t.Errorf("count %d, want %d", r.Lists["l"].Count, len(c.want))
					}
					got := keys(r.Rooms)
					want := slices.Clone(c.want)
					slices.Sort(want)
					if !slices.Equal(got, want) {
						t.Errorf("rooms %v, want %v", got, want)
					}
				})
			}
		})

		t.Run("is_dm follows m.direct", func(t *testing.T) {
			yes := true
			body := map[string]any{"conn_id": "dms", "lists": map[string]any{"dms": map[string]any{"ranges": [][]int{{0, 5}}, "timeline_limit": 1,
				"filters": map[string]any{"is_dm": &yes}}}}
			r := s.sliding(t, alice, "", 0, body)
			if r.Lists["dms"].Count != 1 {
				t.Fatalf("dms %d, want 1", r.Lists["dms"].Count)
			}
			setDirect := func(ids ...id.RoomID) {
				s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/account_data/m.direct", alice.AccessToken, map[string]any{bob.UserID.String(): ids}).expect(t, 200)
			}
			setDirect(dm, rooms[0])
			pos := r.Pos
			eventually(t, "rooms[0] listed as a DM", func() bool {
				r := s.sliding(t, alice, pos, 2000, body)
				pos = r.Pos
				return r.Lists["dms"].Count == 2 && r.Rooms[rooms[0].String()].IsDM
			})
			setDirect(dm)
			eventually(t, "rooms[0] no longer a DM", func() bool {
				r := s.sliding(t, alice, pos, 2000, body)
				pos = r.Pos
				return r.Lists["dms"].Count == 1
			})
		})

		t.Run("required_state wildcards and subscriptions", func(t *testing.T) {
			r := s.sliding(t, alice, "", 0, map[string]any{"room_subscriptions": map[string]any{
				rooms[0].String(): map[string]any{"timeline_limit": 5, "required_state": [][]string{{"m.room.member", "*"}, {"m.room.name", ""}}},
				dm.String():       map[string]any{"timeline_limit": 1, "required_state": [][]string{{"*", "*"}}},
			}})
			if len(r.Rooms) != 2 {
				t.Fatalf("rooms %v", keys(r.Rooms))
			}
			r0 := r.Rooms[rooms[0].String()]
			if got, want := slStateKeys(t, r0.RequiredState), []string{"m.room.member|" + alice.UserID.String(), "m.room.name|"}; !slices.Equal(got, want) {
				t.Errorf("required_state %v, want %v", got, want)
			}
			if b := slBodies(t, r0.Timeline); !slices.Equal(b, []string{"hello 0"}) {
				t.Errorf("timeline %v", b)
			}
			d := r.Rooms[dm.String()]
			got := slStateKeys(t, d.RequiredState)
			for _, want := range []string{"m.room.create|", "m.room.member|" + bob.UserID.String(), "m.room.power_levels|"} {
				if !slices.Contains(got, want) {
					t.Errorf("* * lacks %s: %v", want, got)
				}
			}
		})

		t.Run("incremental", func(t *testing.T) {
			body := map[string]any{"lists": map[string]any{
				"all": map[string]any{"ranges": [][]int{{0, 3}}, "timeline_limit": 3, "required_state": [][]string{{"m.room.name", ""}}}}}
			first := s.sliding(t, alice, "", 0, body)
			// Nothing new: the long-poll waits, then a message in a room
			// of the window wakes it with only that room and message.
			type answer struct {
				r   slidingResp
				err error
			}
			done := make(chan answer, 1)
			go func() {
				r, err := s.slidingNoT(alice, first.Pos, 20000, body)
				done <- answer{r, err}
			}()
			dmMsg := sendText(t, bob, dm, "from bob")
			a := <-done
			if a.err != nil {
				t.Fatal(a.err)
			}
			r := a.r
			if len(r.Rooms) != 1 {
				t.Fatalf("rooms %v, want only the DM", keys(r.Rooms))
			}
			d := r.Rooms[dm.String()]
			evs := slEvents(t, d.Timeline)
			if d.Initial || len(evs) != 1 || evs[0].EventID != dmMsg.String() || d.NumLive != 1 {
				t.Errorf("incremental room: %+v", d)
			}
			if r.Lists["all"].Count != 9 {
				t.Errorf("count %d", r.Lists["all"].Count)
			}
			// The same pos again gives the same answer (a retried request).
			again := s.sliding(t, alice, first.Pos, 0, body)
			if _, ok := again.Rooms[dm.String()]; !ok {
				t.Errorf("retried pos lost the DM's message")
			}
			// A rename reaches required_state incrementally.
			if _, err := alice.SendStateEvent(ctx, rooms[4], event.StateRoomName, "", map[string]any{"name": "Renamed"}); err != nil {
				t.Fatal(err)
			}
			r2 := s.sliding(t, alice, r.Pos, 20000, body)
			r4 := r2.Rooms[rooms[4].String()]
			if r4.Name != "Renamed" || len(r4.RequiredState) != 1 {
				t.Errorf("rename: %+v", r4)
			}
			// A message after it: the name, unchanged, is not sent again.
			sendText(t, alice, rooms[4], "after the rename")
			r3 := s.sliding(t, alice, r2.Pos, 20000, body)
			if r4 := r3.Rooms[rooms[4].String()]; r4.Name != "" || len(r4.RequiredState) != 0 || len(r4.Timeline) != 1 {
				t.Errorf("after the rename: %+v", r4)
			}
		})

		t.Run("required_state asked anew", func(t *testing.T) {
			list := map[string]any{"all": map[string]any{"ranges": [][]int{{0, 0}}, "timeline_limit": 1, "required_state": [][]string{{"m.room.name", ""}}}}
			first := s.sliding(t, alice, "", 0, map[string]any{"conn_id": "rs", "lists": list})
			top := keys(first.Rooms)
			if len(top) != 1 {
				t.Fatalf("rooms %v", top)
			}
			// Subscribing to the room with more state sends that state, though
			// nothing happened in the room: at once, though the request may wait.
			start := time.Now()
			r := s.sliding(t, alice, first.Pos, 20000, map[string]any{"conn_id": "rs", "lists": list, "room_subscriptions": map[string]any{
				top[0]: map[string]any{"timeline_limit": 1, "required_state": [][]string{{"m.room.create", ""}}}}})
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("a new subscription waited %v", took)
			}
			got := r.Rooms[top[0]]
			if got.Initial || len(got.Timeline) != 0 || !slices.Contains(slStateKeys(t, got.RequiredState), "m.room.create|") {
				t.Errorf("room with new required_state: %+v", got)
			}
			// A larger timeline_limit (opening the room) sends its timeline
			// again, expanded.
			r = s.sliding(t, alice, r.Pos, 20000, map[string]any{"conn_id": "rs", "lists": list, "room_subscriptions": map[string]any{
				top[0]: map[string]any{"timeline_limit": 3, "required_state": [][]string{{"m.room.create", ""}}}}})
			if x := r.Rooms[top[0]]; !x.ExpandedTimeline || len(x.Timeline) != 3 || x.NumLive != 0 || x.Initial {
				t.Errorf("expanded timeline: %+v", x)
			}
			// An avatar shows in the room's fields.
			if _, err := alice.SendStateEvent(ctx, id.RoomID(top[0]), event.StateRoomAvatar, "", map[string]any{"url": "mxc://x/y"}); err != nil {
				t.Fatal(err)
			}
			r = s.sliding(t, alice, r.Pos, 20000, map[string]any{"conn_id": "rs", "lists": list})
			if a := r.Rooms[top[0]]; !strings.Contains(string(mustJSON(t, a)), "mxc://x/y") {
				t.Errorf("avatar: %+v", a)
			}
		})

		t.Run("growing range", func(t *testing.T) {
			list := func(end int) map[string]any {
				return map[string]any{"conn_id": "grow", "lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, end}}, "timeline_limit": 1}}}
			}
			r := s.sliding(t, alice, "", 0, list(1))
			if len(r.Rooms) != 2 {
				t.Fatalf("rooms %v", keys(r.Rooms))
			}
			// A larger window sends the rooms new to it at once, and only those.
			start := time.Now()
			r2 := s.sliding(t, alice, r.Pos, 20000, list(4))
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("a larger window waited %v", took)
			}
			if len(r2.Rooms) != 3 {
				t.Errorf("rooms %v, want the 3 new to the window", keys(r2.Rooms))
			}
			for id := range r2.Rooms {
				if _, ok := r.Rooms[id]; ok || !r2.Rooms[id].Initial {
					t.Errorf("room %s sent again or not initial", id)
				}
			}
		})

		t.Run("idle long-poll waits for its timeout", func(t *testing.T) {
			body := map[string]any{"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 1}}, "timeline_limit": 1}}}
			first := s.sliding(t, alice, "", 0, body)
			start := time.Now()
			r := s.sliding(t, alice, first.Pos, 800, body)
			if took := time.Since(start); took < 600*time.Millisecond {
				t.Errorf("an idle long-poll with timeout=800 returned after %v: %+v", took, r)
			}
			if len(r.Rooms) != 0 || r.Lists["all"].Count != 9 {
				t.Errorf("idle answer: rooms %v, count %d", keys(r.Rooms), r.Lists["all"].Count)
			}
			// Its pos goes on from there.
			sendText(t, alice, rooms[0], "after idle")
			r = s.sliding(t, alice, r.Pos, 20000, body)
			if b := slBodies(t, r.Rooms[rooms[0].String()].Timeline); !slices.Equal(b, []string{"after idle"}) {
				t.Errorf("after idle: %v", keys(r.Rooms))
			}
		})

		t.Run("unknown pos", func(t *testing.T) {
			s.do(t, "POST", slidingPath+"?pos=12345", alice.AccessToken, map[string]any{}).expectErr(t, 400, "M_UNKNOWN_POS")
			s.do(t, "POST", slidingPath+"?pos=nonsense", alice.AccessToken, map[string]any{}).expectErr(t, 400, "M_UNKNOWN_POS")
			// A pos of another connection is unknown on this one.
			r := s.sliding(t, alice, "", 0, map[string]any{"conn_id": "a"})
			s.do(t, "POST", slidingPath+"?pos="+r.Pos, alice.AccessToken, map[string]any{"conn_id": "b"}).expectErr(t, 400, "M_UNKNOWN_POS")
			// And another user's.
			s.do(t, "POST", slidingPath+"?pos="+r.Pos, bob.AccessToken, map[string]any{"conn_id": "a"}).expectErr(t, 400, "M_UNKNOWN_POS")
		})

		t.Run("bad bodies", func(t *testing.T) {
			cases := []struct {
				body    any
				status  int
				errcode string
			}{
				{"not json", 400, "M_NOT_JSON"},
				{"[1,2]", 400, "M_BAD_JSON"},
				{`{"lists": 5}`, 400, "M_BAD_JSON"},
				{`{"lists": {"a": {"ranges": [[3, 1]]}}}`, 400, "M_INVALID_PARAM"},
				{`{"lists": {"a": {"ranges": [[1]]}}}`, 400, "M_INVALID_PARAM"},
				{`{"lists": {"a": {"required_state": [["a"]]}}}`, 400, "M_INVALID_PARAM"},
				{`{"room_subscriptions": {"!x:y": {"timeline_limit": -1}}}`, 400, "M_INVALID_PARAM"},
				{`{"extensions": {"to_device": {"enabled": true, "since": "x"}}}`, 400, "M_INVALID_PARAM"},
				{`{"lists": {"a": {"ranges": [` + strings.Repeat(`[0, 1], `, 60) + `[0, 1]]}}}`, 400, "M_INVALID_PARAM"},
			}
			for _, c := range cases {
				s.do(t, "POST", slidingPath, alice.AccessToken, c.body).expectErr(t, c.status, c.errcode)
			}
			s.do(t, "POST", slidingPath+"?timeout=-5", alice.AccessToken, "{}").expectErr(t, 400, "M_INVALID_PARAM")
		})

		t.Run("extensions", func(t *testing.T) {
			key := newTestKey(t)
			otk := func(n string) json.RawMessage {
				return key.sign(t, alice.UserID.String(), "ed25519:"+alice.DeviceID.String(), map[string]any{"key": "otk-" + n})
			}
			s.do(t, "POST", v3+"/keys/upload", alice.AccessToken, map[string]any{"device_keys": deviceKeysOf(t, alice, key),
				"one_time_keys": map[string]any{"signed_curve25519:1": otk("1"), "signed_curve25519:2": otk("2")}}).expect(t, 200)
			s.do(t, "PUT", v3+"/sendToDevice/m.test/"+txn(), bob.AccessToken, map[string]any{"messages": map[string]any{
				alice.UserID.String(): map[string]any{alice.DeviceID.String(): map[string]any{"n": 1}}}}).expect(t, 200)
			ext := func(since string) map[string]any {
				td := map[string]any{"enabled": true}
				if since != "" {
					td["since"] = since
				}
				return map[string]any{"conn_id": "ext", "extensions": map[string]any{"to_device": td,
					"e2ee": map[string]any{"enabled": true}, "account_data": map[string]any{"enabled": true}}}
			}
			// The message reaches the sync engine through the bus.
			var r slidingResp
			eventually(t, "the to-device message", func() bool {
				r = s.sliding(t, alice, "", 0, ext(""))
				return r.Extensions.ToDevice != nil && len(r.Extensions.ToDevice.Events) > 0
			})
			td := r.Extensions.ToDevice
			if len(td.Events) != 1 || td.NextBatch == "" || td.NextBatch == "0" {
				t.Fatalf("to_device: %+v", td)
			}
			if e := r.Extensions.E2EE; e == nil || e.OTKCounts["signed_curve25519"] != 2 {
				t.Errorf("e2ee: %+v", e)
			}
			if a := r.Extensions.AccountData; a == nil || !slices.ContainsFunc(slEvents(t, a.Global), func(e slEvent) bool { return e.Type == "m.direct" }) {
				t.Errorf("account_data: %+v", a)
			}
			// The next since acknowledges the message; bob's new keys show
			// in device_lists.changed (they share the DM).
			uploadDeviceKeys(t, bob)
			var changed bool
			pos := r.Pos
			eventually(t, "bob's device list change", func() bool {
				r2 := s.sliding(t, alice, pos, 2000, ext(td.NextBatch))
				pos = r2.Pos
				if r2.Extensions.ToDevice != nil && len(r2.Extensions.ToDevice.Events) != 0 {
					t.Fatalf("to-device message sent again: %+v", r2.Extensions.ToDevice)
				}
				if e := r2.Extensions.E2EE; e != nil && slices.Contains(e.DeviceLists.Changed, bob.UserID.String()) {
					changed = true
				}
				return changed
			})
		})

		t.Run("receipts and typing", func(t *testing.T) {
			body := map[string]any{"conn_id": "eph", "room_subscriptions": map[string]any{dm.String(): map[string]any{"timeline_limit": 1}},
				"extensions": map[string]any{"receipts": map[string]any{"enabled": true}, "typing": map[string]any{"enabled": true}}}
			first := s.sliding(t, alice, "", 0, body)
			msg := sendText(t, alice, dm, "read me")
			s.do(t, "POST", v3+"/rooms/"+p(dm)+"/receipt/m.read/"+p(msg), bob.AccessToken, map[string]any{}).expect(t, 200)
			s.do(t, "PUT", v3+"/rooms/"+p(dm)+"/typing/"+p(bob.UserID), bob.AccessToken, map[string]any{"typing": true, "timeout": 30000}).expect(t, 200)
			var sawReceipt, sawTyping bool
			pos := first.Pos
			eventually(t, "bob's receipt and typing", func() bool {
				raw := s.do(t, "POST", slidingPath+"?timeout=2000&pos="+pos, alice.AccessToken, body).expect(t, 200)
				var r struct {
					Pos        string `json:"pos"`
					Extensions struct {
						Receipts struct {
							Rooms map[string]struct {
								Content map[string]map[string]map[string]any `json:"content"`
							} `json:"rooms"`
						} `json:"receipts"`
						Typing struct {
							Rooms map[string]struct {
								Content struct {
									UserIDs []string `json:"user_ids"`
								} `json:"content"`
							} `json:"rooms"`
						} `json:"typing"`
					} `json:"extensions"`
				}
				if err := json.Unmarshal(raw.Raw, &r); err != nil {
					t.Fatal(err)
				}
				pos = r.Pos
				if rc, ok := r.Extensions.Receipts.Rooms[dm.String()]; ok && rc.Content[msg.String()]["m.read"][bob.UserID.String()] != nil {
					sawReceipt = true
				}
				if ty, ok := r.Extensions.Typing.Rooms[dm.String()]; ok && slices.Contains(ty.Content.UserIDs, bob.UserID.String()) {
					sawTyping = true
				}
				return sawReceipt && sawTyping
			})
		})

		t.Run("membership changes", func(t *testing.T) {
			body := map[string]any{"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 20}}, "timeline_limit": 2,
				"required_state": [][]string{{"m.room.member", "$ME"}}}}}
			first := s.sliding(t, alice, "", 0, body)
			if inv := first.Rooms[invited.String()]; len(inv.InviteState) == 0 {
				t.Fatalf("invite not sent: %+v", inv)
			}
			// Accepting the invite sends the room whole; leaving a room
			// sends it up to the leave, and the list no longer counts it.
			join(t, alice, invited.String())
			if _, err := alice.LeaveRoom(ctx, rooms[3]); err != nil {
				t.Fatal(err)
			}
			// Gathered over the responses (the two may come apart).
			r := s.sliding(t, alice, first.Pos, 2000, body)
			pos := r.Pos
			eventually(t, "the join and the leave", func() bool {
				_, a := r.Rooms[invited.String()]
				_, b := r.Rooms[rooms[3].String()]
				if a && b {
					return true
				}
				r2 := s.sliding(t, alice, pos, 2000, body)
				pos = r2.Pos
				for id, room := range r2.Rooms {
					r.Rooms[id] = room
				}
				r.Lists = r2.Lists
				return false
			})
			j := r.Rooms[invited.String()]
			if !j.Initial || len(j.InviteState) != 0 || len(j.Timeline) == 0 || j.JoinedCount != 2 {
				t.Errorf("accepted invite: %+v", j)
			}
			l := r.Rooms[rooms[3].String()]
			evs := slEvents(t, l.Timeline)
			if l.Initial || len(evs) == 0 || evs[len(evs)-1].Type != "m.room.member" || *evs[len(evs)-1].StateKey != alice.UserID.String() {
				t.Errorf("left room: %+v", l)
			}
			if r.Lists["all"].Count != 8 {
				t.Errorf("count after leaving %d, want 8", r.Lists["all"].Count)
			}
			// The left room is not sent again.
			sendText(t, bob, dm, "later")
			r3 := s.sliding(t, alice, pos, 20000, body)
			if _, ok := r3.Rooms[rooms[3].String()]; ok {
				t.Errorf("left room sent again")
			}
		})
	})
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSlidingSyncBumpStamp: only a room's creation, messages (and the
// other bump types) and the user's own invite or join move it up a list;
// a state change such as a topic, or someone else joining, does not, but
// still reaches a client that has the room. The order survives a restart.
func TestSlidingSyncBumpStamp(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		a := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "A"})
		sendText(t, alice, a, "in A")
		b := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "B"})
		sendText(t, alice, b, "in B")

		// top is the room a fresh connection's one-room window holds;
		// stamps are the bump stamps of both rooms.
		top := func(t *testing.T) (string, map[string]int64) {
			t.Helper()
			one := s.sliding(t, alice, "", 0, map[string]any{"lists": map[string]any{
				"l": map[string]any{"ranges": [][]int{{0, 0}}, "timeline_limit": 1}}})
			if len(one.Rooms) != 1 {
				t.Fatalf("one-room window sent %v", keys(one.Rooms))
			}
			all := s.sliding(t, alice, "", 0, map[string]any{"lists": map[string]any{
				"l": map[string]any{"ranges": [][]int{{0, 9}}, "timeline_limit": 1}}})
			stamps := map[string]int64{}
			for id, r := range all.Rooms {
				stamps[id] = r.BumpStamp
			}
			return keys(one.Rooms)[0], stamps
		}
		first, before := top(t)
		if first != b.String() || before[b.String()] <= before[a.String()] {
			t.Fatalf("top %s, stamps %v: want B (newest message) first", first, before)
		}

		// A connection (of its own: top starts the default one over) that
		// has both rooms, with their topic.
		body := map[string]any{"conn_id": "kept", "lists": map[string]any{
			"l": map[string]any{"ranges": [][]int{{0, 9}}, "timeline_limit": 5, "required_state": [][]string{{"m.room.topic", ""}}}}}
		conn := s.sliding(t, alice, "", 0, body)

		// A topic in A and bob joining A: state changes, no bump.
		if _, err := alice.SendStateEvent(ctx, a, event.StateTopic, "", map[string]any{"topic": "new topic"}); err != nil {
			t.Fatal(err)
		}
		join(t, bob, a.String())
		got, after := top(t)
		if got != b.String() || after[a.String()] != before[a.String()] || after[b.String()] != before[b.String()] {
			t.Errorf("after a topic and a join in A: top %s, stamps %v (before %v); want B first, stamps unchanged", got, after, before)
		}
		// The client that has A still gets the topic and the join.
		inc := s.sliding(t, alice, conn.Pos, 20000, body)
		ra, ok := inc.Rooms[a.String()]
		if !ok || ra.Initial || len(ra.RequiredState) != 1 || len(slEvents(t, ra.Timeline)) != 2 || ra.BumpStamp != before[a.String()] {
			t.Errorf("A incrementally: sent %v, initial %v, %d state and %d timeline events, bump stamp %d; want the topic and bob's join with bump stamp %d",
				ok, ra.Initial, len(ra.RequiredState), len(ra.Timeline), ra.BumpStamp, before[a.String()])
		}

		// A message in A moves it up.
		sendText(t, alice, a, "again in A")
		got, moved := top(t)
		if got != a.String() || moved[a.String()] <= moved[b.String()] {
			t.Errorf("after a message in A: top %s, stamps %v; want A first", got, moved)
		}

		// After a restart, the bump stamps come from the database: a
		// topic in B (newer than A's message) still does not move it.
		s.restart()
		if _, err := alice.SendStateEvent(ctx, b, event.StateTopic, "", map[string]any{"topic": "B's topic"}); err != nil {
			t.Fatal(err)
		}
		got, restarted := top(t)
		if got != a.String() || restarted[a.String()] != moved[a.String()] || restarted[b.String()] != moved[b.String()] {
			t.Errorf("after a restart and a topic in B: top %s, stamps %v (before the restart %v); want A first, stamps unchanged", got, restarted, moved)
		}
	})
}

// slidingExtRooms is the rooms each of the account_data, receipts and
// typing extensions of a sliding sync answer carries.
type slidingExtRooms struct {
	Pos        string `json:"pos"`
	Rooms      map[string]json.RawMessage
	Extensions struct {
		AccountData *struct {
			Rooms map[string][]json.RawMessage `json:"rooms"`
		} `json:"account_data"`
		Receipts *struct {
			Rooms map[string]json.RawMessage `json:"rooms"`
		} `json:"receipts"`
		Typing *struct {
			Rooms map[string]json.RawMessage `json:"rooms"`
		} `json:"typing"`
	} `json:"extensions"`
}

func (s *server) slidingExt(t *testing.T, cli *mautrix.Client, pos string, timeout int, body any) slidingExtRooms {
	t.Helper()
	var out slidingExtRooms
	s.slidingInto(t, cli, pos, timeout, body, &out)
	return out
}

// roomsOf are the rooms of each extension: account_data, receipts, typing.
func (r slidingExtRooms) roomsOf() (ad, rc, ty []string) {
	if a := r.Extensions.AccountData; a != nil {
		ad = keys(a.Rooms)
	}
	if x := r.Extensions.Receipts; x != nil {
		rc = keys(x.Rooms)
	}
	if x := r.Extensions.Typing; x != nil {
		ty = keys(x.Rooms)
	}
	return
}

// TestSlidingSyncExtensionScope: the account_data, receipts and typing
// extensions cover the rooms of the lists and subscriptions their lists
// and rooms name (all of them when absent); a room whose account data
// changed while it was outside the window gets it when it enters; bad
// scopes are refused.
func TestSlidingSyncExtensionScope(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		// Rooms a, b, c, newest last: c tops the lists, b is second, a is
		// subscribed to. Each has room account data, alice's receipt and
		// alice typing.
		var a, b, c id.RoomID
		for i, r := range []*id.RoomID{&a, &b, &c} {
			*r = createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: fmt.Sprintf("R%d", i)})
			msg := sendText(t, alice, *r, "hi")
			s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/rooms/"+p(*r)+"/account_data/m.test", alice.AccessToken, map[string]any{"n": i}).expect(t, 200)
			s.do(t, "POST", v3+"/rooms/"+p(*r)+"/receipt/m.read/"+p(msg), alice.AccessToken, map[string]any{}).expect(t, 200)
		}
		for _, r := range []id.RoomID{a, b, c} {
			s.do(t, "PUT", v3+"/rooms/"+p(r)+"/typing/"+p(alice.UserID), alice.AccessToken, map[string]any{"typing": true, "timeout": 120000}).expect(t, 200)
		}
		body := func(scope map[string]any) map[string]any {
			ext := func() map[string]any {
				e := map[string]any{"enabled": true}
				for k, v := range scope {
					e[k] = v
				}
				return e
			}
			return map[string]any{
				"lists": map[string]any{
					"top":    map[string]any{"ranges": [][]int{{0, 0}}, "timeline_limit": 1},
					"second": map[string]any{"ranges": [][]int{{1, 1}}, "timeline_limit": 1},
				},
				"room_subscriptions": map[string]any{a.String(): map[string]any{"timeline_limit": 1}},
				"extensions":         map[string]any{"account_data": ext(), "receipts": ext(), "typing": ext()},
			}
		}
		all := []string{a.String(), b.String(), c.String()}
		slices.Sort(all)
		// Everything reaches the sync engine through the bus first.
		eventually(t, "the account data, receipts and typing of the three rooms", func() bool {
			ad, rc, ty := s.slidingExt(t, alice, "", 0, body(nil)).roomsOf()
			return slices.Equal(ad, all) && slices.Equal(rc, all) && slices.Equal(ty, all)
		})

		cases := []struct {
			name  string
			scope map[string]any
			want  []string
		}{
			{"absent: every list and subscription", nil, []string{a.String(), b.String(), c.String()}},
			{"wildcards", map[string]any{"lists": []string{"*"}, "rooms": []string{"*"}}, []string{a.String(), b.String(), c.String()}},
			{"one list", map[string]any{"lists": []string{"top"}, "rooms": []string{}}, []string{c.String()}},
			{"every list", map[string]any{"lists": []string{"*"}, "rooms": []string{}}, []string{b.String(), c.String()}},
			{"lists only, subscriptions absent", map[string]any{"lists": []string{"second"}}, []string{a.String(), b.String()}},
			{"every subscription", map[string]any{"lists": []string{}, "rooms": []string{"*"}}, []string{a.String()}},
			{"one subscription", map[string]any{"lists": []string{}, "rooms": []string{a.String()}}, []string{a.String()}},
			{"unknown names", map[string]any{"lists": []string{"nope"}, "rooms": []string{b.String(), "!nope:localhost"}}, nil},
			{"none", map[string]any{"lists": []string{}, "rooms": []string{}}, nil},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				want := slices.Clone(tc.want)
				slices.Sort(want)
				ad, rc, ty := s.slidingExt(t, alice, "", 0, body(tc.scope)).roomsOf()
				for _, got := range []struct {
					ext   string
					rooms []string
				}{{"account_data", ad}, {"receipts", rc}, {"typing", ty}} {
					if len(got.rooms) != len(want) || (len(want) > 0 && !slices.Equal(got.rooms, want)) {
						t.Errorf("%s covers %v, want %v", got.ext, got.rooms, want)
					}
				}
			})
		}

		t.Run("bad scopes", func(t *testing.T) {
			many := make([]string, 600)
			for i := range many {
				many[i] = fmt.Sprintf("!r%d:localhost", i)
			}
			cases := []struct {
				body    any
				errcode string
			}{
				{map[string]any{"extensions": map[string]any{"receipts": map[string]any{"enabled": true, "rooms": []string{"not a room"}}}}, "M_INVALID_PARAM"},
				{map[string]any{"extensions": map[string]any{"typing": map[string]any{"enabled": true, "lists": []string{""}}}}, "M_INVALID_PARAM"},
				{map[string]any{"extensions": map[string]any{"account_data": map[string]any{"enabled": true, "rooms": many}}}, "M_INVALID_PARAM"},
				{map[string]any{"extensions": map[string]any{"account_data": map[string]any{"enabled": true, "lists": strings.Repeat("x", 10)}}}, "M_BAD_JSON"},
				{`{"extensions": {"typing": {"enabled": true, "rooms": [5]}}}`, "M_BAD_JSON"},
			}
			for _, c := range cases {
				s.do(t, "POST", slidingPath, alice.AccessToken, c.body).expectErr(t, 400, c.errcode)
			}
		})

		t.Run("account data of a room entering the window", func(t *testing.T) {
			win := map[string]any{"conn_id": "adwin", "lists": map[string]any{"top": map[string]any{"ranges": [][]int{{0, 0}}, "timeline_limit": 1}},
				"extensions": map[string]any{"account_data": map[string]any{"enabled": true}}}
			first := s.sliding(t, alice, "", 0, win)
			if keys(first.Rooms)[0] != c.String() {
				t.Fatalf("window %v, want c", keys(first.Rooms))
			}
			// a gets a tag and new account data while outside the window.
			s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/rooms/"+p(a)+"/tags/u.work", alice.AccessToken, map[string]any{"order": 0.1}).expect(t, 200)
			s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/rooms/"+p(a)+"/account_data/m.test", alice.AccessToken, map[string]any{"n": "outside"}).expect(t, 200)
			// Once another connection that covers a sees the change, the
			// engine has it: a response of the window's connection after
			// that is past it, and does not carry it (a is not in the window).
			eventually(t, "a's new account data", func() bool {
				r := s.sliding(t, alice, "", 0, map[string]any{"conn_id": "adsub", "room_subscriptions": map[string]any{a.String(): map[string]any{"timeline_limit": 0}},
					"extensions": map[string]any{"account_data": map[string]any{"enabled": true}}})
				return r.Extensions.AccountData != nil && strings.Contains(string(mustJSON(t, r.Extensions.AccountData.Rooms[a.String()])), "outside")
			})
			r := s.sliding(t, alice, first.Pos, 1, win)
			if ad := r.Extensions.AccountData; ad != nil && len(ad.Rooms) > 0 {
				t.Errorf("account data of rooms outside the window: %v", keys(ad.Rooms))
			}
			// A message moves a to the top: it is sent whole, with all its
			// account data.
			sendText(t, alice, a, "up")
			pos := r.Pos
			var got []json.RawMessage
			eventually(t, "a entering the window", func() bool {
				r := s.sliding(t, alice, pos, 2000, win)
				pos = r.Pos
				if room, ok := r.Rooms[a.String()]; ok {
					if !room.Initial {
						t.Errorf("a not sent whole: %+v", room)
					}
					if r.Extensions.AccountData != nil {
						got = r.Extensions.AccountData.Rooms[a.String()]
					}
					return true
				}
				return false
			})
			types := map[string]string{}
			for _, e := range slEvents(t, got) {
				types[e.Type] = string(e.Content)
			}
			if !strings.Contains(types["m.tag"], "u.work") || !strings.Contains(types["m.test"], "outside") {
				t.Errorf("account data of a on entering: %v", types)
			}
		})

		t.Run("a room back in the window", func(t *testing.T) {
			// b was sent on this connection, left the window, got new
			// account data and a receipt while out, and comes back: not
			// sent whole (the client has it), but with all of its account
			// data and receipts.
			win := map[string]any{"conn_id": "adback", "lists": map[string]any{"top": map[string]any{"ranges": [][]int{{0, 0}}, "timeline_limit": 1}},
				"extensions": map[string]any{"account_data": map[string]any{"enabled": true}, "receipts": map[string]any{"enabled": true}}}
			top := func(room id.RoomID, pos string) string {
				t.Helper()
				eventually(t, "the window's top room", func() bool {
					r := s.slidingExt(t, alice, pos, 2000, win)
					pos = r.Pos
					_, ok := r.Rooms[room.String()]
					return ok
				})
				return pos
			}
			bUp := sendText(t, alice, b, "b up")
			pos := top(b, "")
			sendText(t, alice, c, "c up")
			pos = top(c, pos)
			s.do(t, "PUT", v3+"/user/"+p(alice.UserID)+"/rooms/"+p(b)+"/account_data/m.test", alice.AccessToken, map[string]any{"n": "while out"}).expect(t, 200)
			s.do(t, "POST", v3+"/rooms/"+p(b)+"/receipt/m.read.private/"+p(bUp), alice.AccessToken, map[string]any{}).expect(t, 200)
			eventually(t, "b's new account data", func() bool {
				r := s.slidingExt(t, alice, "", 0, map[string]any{"conn_id": "adback-sub", "room_subscriptions": map[string]any{b.String(): map[string]any{"timeline_limit": 0}},
					"extensions": map[string]any{"account_data": map[string]any{"enabled": true}}})
				return r.Extensions.AccountData != nil && strings.Contains(string(mustJSON(t, r.Extensions.AccountData.Rooms[b.String()])), "while out")
			})
			// The window's connection moves past the changes without b.
			out := s.slidingExt(t, alice, pos, 1, win)
			if ad, rc, _ := out.roomsOf(); slices.Contains(ad, b.String()) || slices.Contains(rc, b.String()) {
				t.Errorf("b's account data or receipts sent while b is out of the window: %v %v", ad, rc)
			}
			pos = out.Pos
			sendText(t, alice, b, "b back")
			var back slidingExtRooms
			eventually(t, "b back in the window", func() bool {
				back = s.slidingExt(t, alice, pos, 2000, win)
				pos = back.Pos
				_, ok := back.Rooms[b.String()]
				return ok
			})
			var room struct {
				Initial bool `json:"initial"`
			}
			_ = json.Unmarshal(back.Rooms[b.String()], &room)
			if room.Initial {
				t.Errorf("b sent whole again")
			}
			if back.Extensions.AccountData == nil || !strings.Contains(string(mustJSON(t, back.Extensions.AccountData.Rooms[b.String()])), "while out") {
				t.Errorf("b's account data set while out not sent on its return: %+v", back.Extensions.AccountData)
			}
			if back.Extensions.Receipts == nil || !strings.Contains(string(back.Extensions.Receipts.Rooms[b.String()]), bUp.String()) {
				t.Errorf("b's receipt set while out not sent on its return: %+v", back.Extensions.Receipts)
			}
		})
	})
}

// TestSlidingSyncWorldReadable: a room subscription to a world-readable
// room the user is not in returns the room as a non-member sees it, and
// its later messages; one to another room the user is not in returns
// nothing.
func TestSlidingSyncWorldReadable(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		readable := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Open", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, StateKey: sk(""), Content: event.Content{Raw: map[string]any{"history_visibility": "world_readable"}}}}})
		sendText(t, bob, readable, "for everyone")
		shared := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Shared"})
		sendText(t, bob, shared, "for members")
		private := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Closed"})
		sendText(t, bob, private, "secret")
		sub := map[string]any{"timeline_limit": 5, "required_state": [][]string{{"m.room.create", ""}, {"m.room.history_visibility", ""}}}
		body := map[string]any{"conn_id": "wr", "room_subscriptions": map[string]any{
			readable.String(): sub, shared.String(): sub, private.String(): sub, "!unknown:localhost": sub}}
		r := s.sliding(t, alice, "", 0, body)
		if got := keys(r.Rooms); !slices.Equal(got, []string{readable.String()}) {
			t.Fatalf("rooms %v, want only the world-readable one", got)
		}
		room := r.Rooms[readable.String()]
		if !room.Initial || room.Name != "Open" || !slices.Contains(slBodies(t, room.Timeline), "for everyone") ||
			!slices.Contains(slStateKeys(t, room.RequiredState), "m.room.create|") || room.JoinedCount != 1 || room.BumpStamp == 0 {
			t.Errorf("world-readable room: %+v", room)
		}
		// Its later messages come on the connection (with its next answer:
		// a room the user is not in does not wake it).
		sendText(t, bob, readable, "later")
		pos := r.Pos
		eventually(t, "the later message", func() bool {
			r := s.sliding(t, alice, pos, 500, body)
			pos = r.Pos
			room, ok := r.Rooms[readable.String()]
			if ok && room.Initial {
				t.Errorf("sent whole again: %+v", room)
			}
			return ok && slices.Contains(slBodies(t, room.Timeline), "later")
		})
	})
}

// TestSlidingSyncConnState: what a connection remembers it sent. $LAZY
// members are sent once per room (again when the member event changes);
// a required_state that grows sends only the state new to it, one that
// shrinks stops the changes of what it dropped, which is sent again when
// asked again; the last three positions of a connection are kept.
func TestSlidingSyncConnState(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")
		// memberKeys are the member state keys of required_state.
		memberKeys := func(t *testing.T, raws []json.RawMessage) []string {
			t.Helper()
			var out []string
			for _, e := range slEvents(t, raws) {
				if e.Type == "m.room.member" {
					out = append(out, *e.StateKey)
				}
			}
			slices.Sort(out)
			return out
		}

		t.Run("lazy members", func(t *testing.T) {
			r := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Lazy"})
			join(t, bob, r.String())
			join(t, carol, r.String())
			for _, b := range []string{"b1", "b2", "b3"} {
				sendText(t, bob, r, b)
			}
			// The timeline holds only bob's messages: carol's member is
			// not sent.
			body := map[string]any{"conn_id": "lazy", "room_subscriptions": map[string]any{
				r.String(): map[string]any{"timeline_limit": 3, "required_state": [][]string{{"m.room.member", "$LAZY"}}}}}
			first := s.sliding(t, alice, "", 0, body)
			if got, want := memberKeys(t, first.Rooms[r.String()].RequiredState), []string{alice.UserID.String(), bob.UserID.String()}; !slices.Equal(got, want) {
				t.Fatalf("initial members %v, want %v", got, want)
			}
			pos := first.Pos
			steps := []struct {
				name string
				act  func(t *testing.T)
				want []string // the members sent
			}{
				{"a new sender's member, though no state changed", func(t *testing.T) {
					sendText(t, carol, r, "c1")
				}, []string{carol.UserID.String()}},
				{"senders already sent are not sent again", func(t *testing.T) {
					sendText(t, bob, r, "b4")
					sendText(t, carol, r, "c2")
					sendText(t, alice, r, "a1")
				}, nil},
				{"a displayname change is sent", func(t *testing.T) {
					if _, err := bob.SendStateEvent(ctx, r, event.StateMember, bob.UserID.String(), map[string]any{"membership": "join", "displayname": "Bobby"}); err != nil {
						t.Fatal(err)
					}
					sendText(t, bob, r, "b5")
				}, []string{bob.UserID.String()}},
				{"and then not again", func(t *testing.T) { sendText(t, bob, r, "b6") }, nil},
			}
			for _, st := range steps {
				t.Run(st.name, func(t *testing.T) {
					st.act(t)
					resp := s.sliding(t, alice, pos, 20000, body)
					pos = resp.Pos
					room, ok := resp.Rooms[r.String()]
					if !ok || len(room.Timeline) == 0 || room.Initial {
						t.Fatalf("room not sent incrementally: %v %+v", ok, room)
					}
					if got := memberKeys(t, room.RequiredState); !slices.Equal(got, st.want) {
						t.Errorf("members sent %v, want %v", got, st.want)
					}
					if st.want != nil {
						for _, e := range slEvents(t, room.RequiredState) {
							if *e.StateKey == bob.UserID.String() && !strings.Contains(string(e.Content), "Bobby") {
								t.Errorf("bob's member event is not the new one: %s", e.Content)
							}
						}
					}
				})
			}
			// Another connection has had nothing: all the senders' members.
			other := s.sliding(t, alice, "", 0, map[string]any{"conn_id": "lazy2", "room_subscriptions": map[string]any{
				r.String(): map[string]any{"timeline_limit": 1, "required_state": [][]string{{"m.room.member", "$LAZY"}}}}})
			if got, want := memberKeys(t, other.Rooms[r.String()].RequiredState), []string{alice.UserID.String(), bob.UserID.String()}; !slices.Equal(got, want) {
				t.Errorf("a new connection's members %v, want %v", got, want)
			}
		})

		t.Run("required_state changes", func(t *testing.T) {
			r := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Changing", Topic: "first topic"})
			join(t, bob, r.String())
			setTopic := func(topic string) func(t *testing.T) {
				return func(t *testing.T) {
					if _, err := alice.SendStateEvent(ctx, r, event.StateTopic, "", map[string]any{"topic": topic}); err != nil {
						t.Fatal(err)
					}
				}
			}
			name := []string{"m.room.name", ""}
			topic := []string{"m.room.topic", ""}
			a, b := "m.room.member|"+alice.UserID.String(), "m.room.member|"+bob.UserID.String()
			steps := []struct {
				name     string
				required [][]string
				act      func(t *testing.T) // before the request, which then waits for it
				want     []string           // the state sent (nil: none)
				some     bool               // want is only part of what is sent
			}{
				{"initial", [][]string{name}, nil, []string{"m.room.name|"}, false},
				{"grown: only the new entry", [][]string{name, topic}, nil, []string{"m.room.topic|"}, false},
				{"shrunk: nothing to send", [][]string{name}, nil, nil, false},
				{"shrunk: a change of what was dropped is not sent", [][]string{name}, setTopic("second topic"), nil, false},
				{"grown back: sent again", [][]string{name, topic}, nil, []string{"m.room.topic|"}, false},
				{"$ME", [][]string{name, topic, {"m.room.member", "$ME"}}, nil, []string{a}, false},
				{"[member, *] past $ME: the others", [][]string{name, topic, {"m.room.member", "*"}}, nil, []string{b}, false},
				{"back to $ME", [][]string{name, topic, {"m.room.member", "$ME"}}, nil, nil, false},
				{"[member, *] again: the others again", [][]string{name, topic, {"m.room.member", "*"}}, nil, []string{b}, false},
				{"[*, *]: the rest", [][]string{{"*", "*"}}, nil, []string{"m.room.create|", "m.room.join_rules|", "m.room.power_levels|"}, true},
				{"a change under [*, *]", [][]string{{"*", "*"}}, setTopic("third topic"), []string{"m.room.topic|"}, false},
				{"shrunk to the name: a change of it still sent", [][]string{name}, func(t *testing.T) {
					if _, err := alice.SendStateEvent(ctx, r, event.StateRoomName, "", map[string]any{"name": "Changed"}); err != nil {
						t.Fatal(err)
					}
				}, []string{"m.room.name|"}, false},
			}
			pos := ""
			for _, st := range steps {
				t.Run(st.name, func(t *testing.T) {
					timeout := 0
					if st.act != nil {
						st.act(t)
						timeout = 20000
					}
					resp := s.sliding(t, alice, pos, timeout, map[string]any{"conn_id": "changes", "room_subscriptions": map[string]any{
						r.String(): map[string]any{"timeline_limit": 1, "required_state": st.required}}})
					pos = resp.Pos
					room, ok := resp.Rooms[r.String()]
					got := slStateKeys(t, room.RequiredState)
					if st.act != nil && !ok {
						t.Fatalf("room not sent after a change")
					}
					if st.some {
						for _, w := range st.want {
							if !slices.Contains(got, w) {
								t.Errorf("state sent %v lacks %s", got, w)
							}
						}
						for _, had := range []string{"m.room.name|", "m.room.topic|", a, b} {
							if slices.Contains(got, had) {
								t.Errorf("state sent %v has %s again", got, had)
							}
						}
						return
					}
					if !slices.Equal(got, st.want) {
						t.Errorf("state sent %v, want %v", got, st.want)
					}
					if st.want == nil && st.act == nil && ok {
						t.Errorf("room sent with nothing new: %+v", room)
					}
				})
			}
		})

		t.Run("the last three positions", func(t *testing.T) {
			r := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Positions"})
			body := map[string]any{"conn_id": "three", "room_subscriptions": map[string]any{r.String(): map[string]any{"timeline_limit": 5}}}
			p1 := s.sliding(t, alice, "", 0, body).Pos
			sendText(t, alice, r, "after p1")
			p2 := s.sliding(t, alice, p1, 20000, body).Pos
			sendText(t, alice, r, "after p2")
			p3 := s.sliding(t, alice, p2, 20000, body).Pos
			p4 := s.sliding(t, alice, p3, 0, body).Pos
			if p4 == p3 || p3 == p2 {
				t.Fatalf("positions %s %s %s do not move on", p2, p3, p4)
			}
			// Four back is unknown; three back still works (the client lost
			// two responses), with what came after it.
			s.do(t, "POST", slidingPath+"?pos="+p1, alice.AccessToken, body).expectErr(t, 400, "M_UNKNOWN_POS")
			again := s.sliding(t, alice, p2, 0, body)
			if b := slBodies(t, again.Rooms[r.String()].Timeline); !slices.Equal(b, []string{"after p2"}) {
				t.Errorf("from three back: %v, want [after p2]", b)
			}
		})
	})
}

// TestSlidingSyncUnreadCounts: a room's unread counts come with the room,
// threads included in the total and also given per thread root; reading
// the room (a receipt, from any device) sends the room again with the
// new counts alone, with or without the receipts extension.
func TestSlidingSyncUnreadCounts(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice, bob := s.register(t, "alice"), s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Counts"})
		join(t, bob, room.String())
		body := map[string]any{"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 5}}, "timeline_limit": 5}}}
		first := s.sliding(t, alice, "", 0, body)
		root := sendText(t, bob, room, "one")
		sendText(t, bob, room, "two")
		if _, err := bob.SendMessageEvent(context.Background(), room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "in the thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root.String()}}); err != nil {
			t.Fatal(err)
		}
		pos := first.Pos
		eventually(t, "three unread, one of them in the thread", func() bool {
			r := s.sliding(t, alice, pos, 2000, body)
			pos = r.Pos
			got, ok := r.Rooms[room.String()]
			if !ok {
				return false
			}
			return got.Notifications == 3 && got.Threads[root.String()].Notifications == 1
		})
		// Alice reads everything (an unthreaded receipt on the latest
		// event): the room comes again with nothing but its counts.
		resp, err := alice.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 1)
		if err != nil || len(resp.Chunk) != 1 {
			t.Fatalf("latest event: %v", err)
		}
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/receipt/m.read/"+p(resp.Chunk[0].ID), alice.AccessToken, map[string]any{}).expect(t, 200)
		eventually(t, "the counts cleared", func() bool {
			r := s.sliding(t, alice, pos, 2000, body)
			pos = r.Pos
			got, ok := r.Rooms[room.String()]
			if ok && (len(got.Timeline) != 0 || got.Initial) {
				t.Errorf("more than the counts: %+v", got)
			}
			return ok && got.Notifications == 0 && len(got.Threads) == 0
		})
	})
}
