package federationapi

import (
	"encoding/json"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

type directoryPage struct {
	Chunk []struct {
		RoomID string `json:"room_id"`
		Name   string `json:"name"`
	} `json:"chunk"`
	NextBatch string `json:"next_batch"`
	PrevBatch string `json:"prev_batch"`
	Total     *int   `json:"total_room_count_estimate"`
}

func (p directoryPage) ids() []string {
	var out []string
	for _, r := range p.Chunk {
		out = append(out, r.RoomID)
	}
	return out
}

// TestPublicRooms: another server lists this server's published rooms,
// by GET and by POST with a filter, in pages; bad input is a Matrix error.
func TestPublicRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		e.api.Directory = e.rs
		var published []string
		for _, name := range []string{"Deploys", "Lunch", "Support"} {
			n := name
			res, err := e.rs.CreateRoom(e.ctx, alice, roomserver.CreateRoomRequest{Preset: "public_chat", Name: &n, Visibility: "public"})
			if err != nil {
				t.Fatal(err)
			}
			published = append(published, res.RoomID)
		}
		e.publicRoom("10") // public, not published
		sort.Strings(published)
		const path = "/_matrix/federation/v1/publicRooms"
		get := func(query string) directoryPage {
			t.Helper()
			r := e.do("GET", path+query, remoteName, nil)
			wantOK(t, r)
			var p directoryPage
			r.decode(t, &p)
			return p
		}
		p := get("")
		if got := p.ids(); len(got) != 3 || p.Total == nil || *p.Total != 3 || p.NextBatch != "" {
			t.Fatalf("all: %+v", p)
		}
		// Pages of two, forwards and back.
		p = get("?limit=2")
		if len(p.Chunk) != 2 || p.NextBatch == "" || p.PrevBatch != "" {
			t.Fatalf("first page: %+v", p)
		}
		p2 := get("?limit=2&since=" + url.QueryEscape(p.NextBatch))
		if len(p2.Chunk) != 1 || p2.NextBatch != "" || p2.PrevBatch == "" {
			t.Fatalf("second page: %+v", p2)
		}
		got := append(p.ids(), p2.ids()...)
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(published, ",") {
			t.Fatalf("pages %v, want %v", got, published)
		}
		if p := get("?third_party_instance_id=irc"); len(p.Chunk) != 0 {
			t.Fatalf("a bridged network's rooms: %+v", p)
		}
		if p := get("?include_all_networks=true"); len(p.Chunk) != 3 {
			t.Fatalf("all networks: %+v", p)
		}

		post := func(body any) reply { return e.do("POST", path, remoteName, body) }
		r := post(map[string]any{"filter": map[string]any{"generic_search_term": "lunch"}, "limit": 10})
		wantOK(t, r)
		r.decode(t, &p)
		if len(p.Chunk) != 1 || p.Chunk[0].Name != "Lunch" {
			t.Fatalf("search: %s", r.body)
		}
		r = post(map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}})
		wantOK(t, r)
		r.decode(t, &p)
		if len(p.Chunk) != 0 {
			t.Fatalf("room types: %s", r.body)
		}
		wantOK(t, post(`{"filter":null}`))
		wantOK(t, post(`{}`))

		for _, c := range []struct {
			name, method, query string
			body                any
			status              int
			errcode             string
		}{
			{"limit not a number", "GET", "?limit=ten", nil, 400, "M_INVALID_PARAM"},
			{"negative limit", "GET", "?limit=-1", nil, 400, "M_INVALID_PARAM"},
			{"bad since", "GET", "?since=bogus", nil, 400, "M_INVALID_PARAM"},
			{"huge since", "GET", "?since=p99999999999999999999", nil, 400, "M_INVALID_PARAM"},
			{"bad include_all_networks", "GET", "?include_all_networks=maybe", nil, 400, "M_INVALID_PARAM"},
			{"both networks", "GET", "?include_all_networks=true&third_party_instance_id=irc", nil, 400, "M_INVALID_PARAM"},
			{"not JSON", "POST", "", "nope", 400, "M_NOT_JSON"},
			{"limit as text", "POST", "", `{"limit":"ten"}`, 400, "M_BAD_JSON"},
			{"room_types not a list", "POST", "", `{"filter":{"room_types":"m.space"}}`, 400, "M_BAD_JSON"},
			{"negative limit (POST)", "POST", "", `{"limit":-5}`, 400, "M_INVALID_PARAM"},
			{"bad since (POST)", "POST", "", `{"since":"x1"}`, 400, "M_INVALID_PARAM"},
			{"too large", "POST", "", `{"since":"` + strings.Repeat("p", 20000) + `"}`, 413, "M_TOO_LARGE"},
		} {
			t.Run(c.name, func(t *testing.T) {
				wantErr(t, e.do(c.method, path+c.query, remoteName, c.body), c.status, c.errcode)
			})
		}

		// Through the request signatures.
		r = e.doSigned("POST", path, remoteName, e.remote, map[string]any{"limit": 1})
		wantOK(t, r)
		r.decode(t, &p)
		if len(p.Chunk) != 1 || p.NextBatch == "" {
			t.Fatalf("signed POST: %s", r.body)
		}
		wantOK(t, e.doSigned("GET", path+"?limit=1", remoteName, e.remote, nil))
		wantErr(t, e.doSigned("GET", path, "denied.test", e.remote, nil), 403, "M_FORBIDDEN")
	})
}

// TestFederationHierarchy: another server sees a space's children it
// may join or peek, and the rooms where one of its users is; the others
// are listed as inaccessible, and asking for them is 404.
func TestFederationHierarchy(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		e.api.Directory = e.rs
		create := func(preset string, space bool) string {
			t.Helper()
			req := roomserver.CreateRoomRequest{Preset: preset, RoomVersion: "10"}
			if space {
				req.CreationContent = map[string]json.RawMessage{"type": json.RawMessage(`"m.space"`)}
			}
			res, err := e.rs.CreateRoom(e.ctx, alice, req)
			if err != nil {
				t.Fatal(err)
			}
			return res.RoomID
		}
		state := func(roomID, typ, key, content string) {
			t.Helper()
			if _, err := e.rs.Send(e.ctx, roomserver.Sender{UserID: alice, DeviceID: "D"}, roomserver.SendRequest{RoomID: roomID, Type: typ, StateKey: &key, Content: json.RawMessage(content)}); err != nil {
				t.Fatal(err)
			}
		}
		space := create("public_chat", true)
		pub := create("public_chat", false)
		priv := create("private_chat", false)
		// shared becomes invite-only after rita of remote.test joined it.
		shared := create("public_chat", false)
		e.joinRemote(shared, rita)
		state(shared, "m.room.join_rules", "", `{"join_rule":"invite"}`)
		for _, c := range []string{pub, priv, shared} {
			state(space, "m.space.child", c, `{"via":["`+localName+`"],"suggested":true}`)
		}
		state(space, "m.space.child", "!elsewhere:"+remoteName, `{"via":["`+remoteName+`"]}`)

		path := func(roomID string) string { return "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID) }
		r := e.do("GET", path(space), remoteName, nil)
		wantOK(t, r)
		var h struct {
			Room struct {
				RoomID        string            `json:"room_id"`
				RoomType      string            `json:"room_type"`
				ChildrenState []json.RawMessage `json:"children_state"`
			} `json:"room"`
			Children []struct {
				RoomID   string `json:"room_id"`
				JoinRule string `json:"join_rule"`
			} `json:"children"`
			Inaccessible []string `json:"inaccessible_children"`
		}
		r.decode(t, &h)
		var children []string
		for _, c := range h.Children {
			children = append(children, c.RoomID)
		}
		sort.Strings(children)
		want := []string{pub, shared}
		sort.Strings(want)
		if h.Room.RoomID != space || h.Room.RoomType != "m.space" || len(h.Room.ChildrenState) != 4 ||
			strings.Join(children, ",") != strings.Join(want, ",") || strings.Join(h.Inaccessible, ",") != priv {
			t.Fatalf("hierarchy for %s: %s", remoteName, r.body)
		}
		// otherName has no user in shared: it is inaccessible to it.
		r = e.do("GET", path(space)+"?suggested_only=true", otherName, nil)
		wantOK(t, r)
		r.decode(t, &h)
		if len(h.Room.ChildrenState) != 3 || len(h.Children) != 1 || h.Children[0].RoomID != pub || len(h.Inaccessible) != 2 {
			t.Fatalf("suggested only, for %s: %s", otherName, r.body)
		}
		wantOK(t, e.do("GET", path(shared), remoteName, nil))
		wantErr(t, e.do("GET", path(shared), otherName, nil), 404, "M_NOT_FOUND")
		wantErr(t, e.do("GET", path(priv), remoteName, nil), 404, "M_NOT_FOUND")
		wantErr(t, e.do("GET", path("!nowhere:"+localName), remoteName, nil), 404, "M_NOT_FOUND")
		wantErr(t, e.do("GET", path("!elsewhere:"+remoteName), remoteName, nil), 404, "M_NOT_FOUND")
		wantErr(t, e.do("GET", path("nope"), remoteName, nil), 400, "M_INVALID_PARAM")
		wantErr(t, e.do("GET", path(space)+"?suggested_only=yes", remoteName, nil), 400, "M_INVALID_PARAM")
		wantOK(t, e.doSigned("GET", path(space), remoteName, e.remote, nil))
	})
}
