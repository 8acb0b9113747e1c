package clientapi

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
)

// fakeDirectory answers one page and records the query.
type fakeDirectory struct {
	mu     sync.Mutex
	server string // "" for this server's directory
	got    roomserver.PublicRoomsQuery
}

func (f *fakeDirectory) PublicRoomsPage(_ context.Context, q roomserver.PublicRoomsQuery) (*roomserver.PublicRoomsPage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.server, f.got = "", q
	return &roomserver.PublicRoomsPage{Chunk: []roomserver.PublicRoom{{RoomID: "!here:test"}}, Total: 1}, nil
}

func (f *fakeDirectory) RemotePublicRooms(_ context.Context, server string, q roomserver.PublicRoomsQuery) (*roomserver.PublicRoomsPage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.server, f.got = server, q
	switch server {
	case "denied.example":
		return nil, merr.Forbidden("Federation with %s is not allowed on this server", server)
	case "down.example":
		return nil, merr.Custom(http.StatusBadGateway, "M_UNKNOWN", "Could not reach %s", server)
	}
	return &roomserver.PublicRoomsPage{Chunk: []roomserver.PublicRoom{{RoomID: "!there:" + server}}, NextBatch: "n1", Total: 7}, nil
}

func (f *fakeDirectory) last() (string, roomserver.PublicRoomsQuery) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.server, f.got
}

// TestPublicRoomsServer: /publicRooms lists this server's directory, or
// with server= another server's through federation; a server that is
// refused or unreachable is a Matrix error, and without federation only
// this server's directory can be listed.
func TestPublicRoomsServer(t *testing.T) {
	dir := &fakeDirectory{}
	const path = "/_matrix/client/v3/publicRooms"
	for _, federation := range []bool{true, false} {
		e := areaServer(t, nil, func(a *API) []func() []Route {
			a.Directory = dir
			if federation {
				a.RemoteDirectory = dir
			}
			return []func() []Route{a.directoryRoutes}
		})
		const alice = "alice-token"
		// This server's own directory, by its name or without one.
		for _, q := range []string{"", "?server=test", "?server=TEST"} {
			r := e.do("GET", path+q, "", nil)
			e.want(r, 200, "")
			if srv, _ := dir.last(); srv != "" || r.raw != `{"chunk":[{"room_id":"!here:test","num_joined_members":0,"world_readable":false,"guest_can_join":false}],"total_room_count_estimate":1}` {
				t.Fatalf("local directory %q: %s", q, r.raw)
			}
		}
		e.want(e.do("GET", path+"?server=bad/name", alice, nil), 400, "M_INVALID_PARAM")
		if !federation {
			e.want(e.do("GET", path+"?server=b.example", alice, nil), 403, "M_FORBIDDEN")
			e.want(e.do("POST", path+"?server=b.example", alice, `{}`), 403, "M_FORBIDDEN")
			continue
		}
		r := e.do("GET", path+"?server=b.example&limit=5&since=p5", alice, nil)
		e.want(r, 200, "")
		if srv, q := dir.last(); srv != "b.example" || q.Limit != 5 || q.Since != "p5" || r.str("next_batch") != "n1" {
			t.Fatalf("remote GET: %s %+v %s", srv, q, r.raw)
		}
		r = e.do("POST", path+"?server=b.example", alice, `{"limit":3,"filter":{"generic_search_term":"ops","room_types":[null,"m.space"]},"third_party_instance_id":"irc"}`)
		e.want(r, 200, "")
		if srv, q := dir.last(); srv != "b.example" || q.Limit != 3 || q.Search != "ops" || len(q.RoomTypes) != 2 || q.RoomTypes[0] != nil ||
			*q.RoomTypes[1] != "m.space" || q.ThirdPartyInstanceID != "irc" {
			t.Fatalf("remote POST: %s %+v", srv, q)
		}
		// Another server's directory needs a user.
		e.want(e.do("GET", path+"?server=b.example", "", nil), 401, "M_MISSING_TOKEN")
		e.want(e.do("GET", path+"?server=denied.example", alice, nil), 403, "M_FORBIDDEN")
		e.want(e.do("GET", path+"?server=down.example", alice, nil), 502, "M_UNKNOWN")
	}
	e := areaServer(t, nil, func(a *API) []func() []Route {
		a.Directory, a.RemoteDirectory = dir, dir
		return []func() []Route{a.directoryRoutes}
	})
	for _, c := range []struct {
		method, query, body string
		status              int
		errcode             string
	}{
		{"GET", "?limit=x", "", 400, "M_INVALID_PARAM"},
		{"GET", "?limit=-2", "", 400, "M_INVALID_PARAM"},
		{"GET", "?include_all_networks=perhaps", "", 400, "M_INVALID_PARAM"},
		{"GET", "?include_all_networks=true&third_party_instance_id=irc", "", 400, "M_INVALID_PARAM"},
		{"POST", "", "nope", 400, "M_NOT_JSON"},
		{"POST", "", `{"limit":"ten"}`, 400, "M_BAD_JSON"},
		{"POST", "", `{"limit":-1}`, 400, "M_INVALID_PARAM"},
		{"POST", "", `{"filter":{"room_types":"m.space"}}`, 400, "M_BAD_JSON"},
		{"POST", "", `{"include_all_networks":true,"third_party_instance_id":"irc"}`, 400, "M_INVALID_PARAM"},
		{"POST", "", `{"filter":null}`, 200, ""},
		{"POST", "?server=b.example", `{"filter":null}`, 200, ""},
	} {
		r := e.do(c.method, "/_matrix/client/v3/publicRooms"+c.query, "alice-token", c.body)
		if r.status != c.status || r.str("errcode") != c.errcode {
			t.Errorf("%s %s %s: got %d %s, want %d %s", c.method, c.query, c.body, r.status, r.raw, c.status, c.errcode)
		}
	}
	// POST needs a user, as before.
	e.want(e.do("POST", "/_matrix/client/v3/publicRooms", "", `{}`), 401, "M_MISSING_TOKEN")
}
