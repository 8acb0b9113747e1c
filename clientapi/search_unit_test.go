package clientapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi"
	"github.com/haven-chat/haven/userapi"
)

func TestRoomTypeAllowed(t *testing.T) {
	space := "m.space"
	for _, c := range []struct {
		types []*string
		typ   string
		want  bool
	}{
		{nil, "", true},
		{nil, "m.space", true},
		{[]*string{nil}, "", true},
		{[]*string{nil}, "m.space", false},
		{[]*string{&space}, "m.space", true},
		{[]*string{&space}, "", false},
		{[]*string{nil, &space}, "m.space", true},
	} {
		if got := roomserver.RoomTypeAllowed(c.types, c.typ); got != c.want {
			t.Errorf("%v %q: got %v", c.types, c.typ, got)
		}
	}
}

type searchTestAuth struct{}

func (searchTestAuth) Authenticate(_ context.Context, token string) (userapi.Device, error) {
	if token == "alice" {
		return userapi.Device{UserID: "@alice:test", DeviceID: "A"}, nil
	}
	return userapi.Device{}, merr.UnknownToken(false, "Unknown token")
}

// searchTestService records what the handlers asked for.
type searchTestService struct {
	search    syncapi.SearchRequest
	relations syncapi.RelationsRequest
	threads   syncapi.ThreadsRequest
	dirTerm   string
	dirLimit  int
}

func (f *searchTestService) Search(_ context.Context, req syncapi.SearchRequest) (*syncapi.SearchResponse, error) {
	f.search = req
	return &syncapi.SearchResponse{}, nil
}

func (f *searchTestService) UserDirectory(_ context.Context, _ string, term string, limit int) (*syncapi.UserDirectoryResponse, error) {
	f.dirTerm, f.dirLimit = term, limit
	return &syncapi.UserDirectoryResponse{Results: []syncapi.UserDirectoryResult{}}, nil
}

func (f *searchTestService) Relations(_ context.Context, req syncapi.RelationsRequest) (*syncapi.RelationsResponse, error) {
	f.relations = req
	return &syncapi.RelationsResponse{Chunk: []json.RawMessage{}}, nil
}

func (f *searchTestService) Threads(_ context.Context, req syncapi.ThreadsRequest) (*syncapi.ThreadsResponse, error) {
	f.threads = req
	return &syncapi.ThreadsResponse{Chunk: []json.RawMessage{}}, nil
}

// TestSearchAndRelationsHandlers: the request parsing of the search,
// user directory, relations and threads routes, through the real router.
func TestSearchAndRelationsHandlers(t *testing.T) {
	cfg := config.Default()
	cfg.ServerName = "test"
	cfg.RateLimits.Enabled = false
	log := logrus.New()
	log.SetOutput(io.Discard)
	svc := &searchTestService{}
	api := &API{Cfg: cfg, Log: log, Auth: searchTestAuth{}, Limiter: NewLimiter(cfg.RateLimits)}
	api.Areas = []func() []Route{api.SearchArea(svc), api.RelationsArea(svc)}
	srv := httptest.NewServer(api.Router())
	defer srv.Close()
	do := func(method, path, token, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		var e struct {
			Errcode string `json:"errcode"`
		}
		_ = json.Unmarshal(raw, &e)
		return res.StatusCode, e.Errcode
	}
	const rel = "/_matrix/client/v1/rooms/!r:test/relations/$e"
	for _, c := range []struct {
		method, path, token, body string
		status                    int
		errcode                   string
	}{
		{"POST", "/_matrix/client/v3/search", "", `{}`, 401, "M_MISSING_TOKEN"},
		{"POST", "/_matrix/client/v3/search", "alice", `{"search_categories":{}}`, 200, ""},
		{"POST", "/_matrix/client/v3/search", "alice", `{"search_categories":{"room_events":{}}}`, 400, "M_MISSING_PARAM"},
		{"POST", "/_matrix/client/v3/search", "alice", `{"search_categories":{"room_events":{"search_term":1}}}`, 400, "M_BAD_JSON"},
		{"POST", "/_matrix/client/v3/search", "alice", `nope`, 400, "M_NOT_JSON"},
		{"POST", "/_matrix/client/v3/search", "alice", `{"search_categories":{"room_events":{"search_term":"x","filter":{"limit":"ten"}}}}`, 400, "M_BAD_JSON"},
		{"POST", "/_matrix/client/v3/search", "alice", `{"search_categories":{"room_events":{"search_term":"x","event_context":{"before_limit":-1}}}}`, 400, "M_INVALID_PARAM"},
		{"POST", "/_matrix/client/v3/search", "alice", `{"search_categories":{"room_events":{"search_term":"x","filter":null}}}`, 200, ""},
		{"POST", "/_matrix/client/v3/search", "alice", `{"search_categories":{"room_events":{"search_term":"x","` + strings.Repeat("y", 70000) + `":1}}}`, 413, "M_TOO_LARGE"},
		{"POST", "/_matrix/client/v3/user_directory/search", "alice", `{}`, 400, "M_MISSING_PARAM"},
		{"POST", "/_matrix/client/v3/user_directory/search", "alice", `{"search_term":"a","limit":-3}`, 400, "M_INVALID_PARAM"},
		{"POST", "/_matrix/client/v3/user_directory/search", "alice", `{"search_term":["a"]}`, 400, "M_BAD_JSON"},
		{"GET", rel + "?dir=up", "alice", "", 400, "M_INVALID_PARAM"},
		{"GET", rel + "?limit=x", "alice", "", 400, "M_INVALID_PARAM"},
		{"GET", rel + "?recurse=yes", "alice", "", 400, "M_INVALID_PARAM"},
		{"GET", rel, "", "", 401, "M_MISSING_TOKEN"},
		{"GET", "/_matrix/client/v1/rooms/!r:test/threads?include=some", "alice", "", 400, "M_INVALID_PARAM"},
		{"GET", "/_matrix/client/v1/rooms/!r:test/threads?limit=-1", "alice", "", 400, "M_INVALID_PARAM"},
	} {
		if status, code := do(c.method, c.path, c.token, c.body); status != c.status || code != c.errcode {
			t.Errorf("%s %s %.80s: got %d %q, want %d %q", c.method, c.path, c.body, status, code, c.status, c.errcode)
		}
	}

	// What reaches the service.
	if st, _ := do("POST", "/_matrix/client/v3/search?next_batch=r9", "alice", `{"search_categories":{"room_events":{"search_term":"hi","keys":["content.body"],
"order_by":"recent","filter":{"rooms":["!a:test"],"not_rooms":["!b:test"],"limit":3,"senders":["@bob:test"]},"event_context":{"after_limit":2,"include_profile":true},
"groupings":{"group_by":[{"key":"room_id"}]}}}}`); st != 200 {
		t.Fatalf("search: %d", st)
	}
	s := svc.search
	if s.UserID != "@alice:test" || s.Term != "hi" || s.OrderBy != "recent" || s.NextBatch != "r9" || s.Limit != 3 || s.Rooms == nil || (*s.Rooms)[0] != "!a:test" ||
		s.NotRooms[0] != "!b:test" || s.Match == nil || s.Match("m.room.message", "@carol:test", false) || !s.Match("m.room.message", "@bob:test", false) ||
		s.Context == nil || s.Context.Before != 5 || s.Context.After != 2 || !s.Context.IncludeProfile || len(s.GroupBy) != 1 || s.GroupBy[0] != "room_id" {
		t.Fatalf("search request: %+v", s)
	}
	if st, _ := do("POST", "/_matrix/client/v3/user_directory/search", "alice", `{"search_term":"bo"}`); st != 200 || svc.dirTerm != "bo" || svc.dirLimit != 10 {
		t.Fatalf("user directory: %d %q %d", st, svc.dirTerm, svc.dirLimit)
	}
	if st, _ := do("GET", rel+"/m.annotation/m.reaction?dir=f&from=t5&to=t9&limit=4&recurse=true", "alice", ""); st != 200 {
		t.Fatalf("relations: %d", st)
	}
	if r := svc.relations; r.RoomID != "!r:test" || r.EventID != "$e" || r.RelType != "m.annotation" || r.EventType != "m.reaction" || !r.Forwards ||
		r.From != "t5" || r.To != "t9" || r.Limit != 4 || !r.Recurse {
		t.Fatalf("relations request: %+v", r)
	}
	if st, _ := do("GET", "/_matrix/client/v1/rooms/!r:test/threads?include=participated&from=t3&limit=7", "alice", ""); st != 200 {
		t.Fatalf("threads: %d", st)
	}
	if r := svc.threads; !r.Participated || r.From != "t3" || r.Limit != 7 || r.RoomID != "!r:test" {
		t.Fatalf("threads request: %+v", r)
	}
}
