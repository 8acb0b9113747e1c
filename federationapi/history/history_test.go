package history_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/federationapi/history"
	"github.com/haven-chat/haven/federationapi/origin"
	"github.com/haven-chat/haven/internal/bus"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

type profiles struct{}

func (profiles) Profile(_ context.Context, userID string) (string, string, error) {
	return "", "", nil
}

type accounts struct{}

func (accounts) AccountExists(context.Context, string) (bool, error) { return true, nil }
func (accounts) IsGuest(context.Context, string) (bool, error)       { return false, nil }

// room is a room of alice's on server "test" with history visible to
// joined members only, where @bob:remote joined after the first message.
type room struct {
	rs                           *roomserver.Service
	id                           string
	before, bobJoin, after, last string
	rejected                     string
	srv                          *httptest.Server
}

func newRoom(t *testing.T, db *storage.DB) *room {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Start(ctx, bus.Options{StoreDir: t.TempDir(), Namespace: "historytest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	key, err := serverkey.Load(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := roomserver.New(ctx, db, b, profiles{}, accounts{}, roomserver.Options{ServerName: "test", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Close)
	res, err := rs.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	rm := &room{rs: rs, id: res.RoomID}
	empty := ""
	if _, err := rs.Send(ctx, roomserver.Sender{UserID: "@alice:test", DeviceID: "D"}, roomserver.SendRequest{RoomID: rm.id,
		Type: "m.room.history_visibility", StateKey: &empty, Content: json.RawMessage(`{"history_visibility":"joined"}`)}); err != nil {
		t.Fatal(err)
	}
	rm.before = rm.send(t, "before bob")
	if _, err := rs.Join(ctx, "@bob:remote", rm.id, ""); err != nil {
		t.Fatal(err)
	}
	join, err := rs.CurrentStateEvent(ctx, rm.id, "m.room.member", "@bob:remote")
	if err != nil {
		t.Fatal(err)
	}
	rm.bobJoin = join.EventID
	rm.after = rm.send(t, "after bob")
	rm.last = rm.send(t, "last")
	rm.rejected = rm.reject(t)

	r := chi.NewRouter()
	// The federation authentication's stand-in: the origin comes from a header.
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if o := req.Header.Get("X-Test-Origin"); o != "" {
				req = req.WithContext(origin.With(req.Context(), o))
			}
			next.ServeHTTP(w, req)
		})
	})
	r.Route("/_matrix/federation", history.New(rs, "test").Routes)
	rm.srv = httptest.NewServer(r)
	t.Cleanup(rm.srv.Close)
	return rm
}

func (rm *room) send(t *testing.T, body string) string {
	t.Helper()
	id, err := rm.rs.Send(context.Background(), roomserver.Sender{UserID: "@alice:test", DeviceID: "D"}, roomserver.SendRequest{RoomID: rm.id,
		Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"` + body + `"}`), TxnID: body})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// reject has the roomserver refuse an event of a user who never joined
// (it is kept as rejected) and returns its ID.
func (rm *room) reject(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	create, _ := rm.rs.CurrentStateEvent(ctx, rm.id, "m.room.create", "")
	pl, _ := rm.rs.CurrentStateEvent(ctx, rm.id, "m.room.power_levels", "")
	last, _ := rm.rs.GetEvent(ctx, rm.last)
	proto := &gomatrixserverlib.ProtoEvent{SenderID: "@mallory:remote", RoomID: rm.id, Type: "m.room.message",
		Content: spec.RawJSON(`{"body":"spam"}`), PrevEvents: []string{rm.last}, AuthEvents: []string{create.EventID, pl.EventID}, Depth: last.Depth + 1}
	_, priv, _ := ed25519.GenerateKey(nil)
	pdu, err := gomatrixserverlib.MustGetRoomVersion("11").NewEventBuilderFromProtoEvent(proto).Build(time.Now(), "remote", "ed25519:1", priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rm.rs.InputEvent(ctx, pdu); !merr.Is(err, "M_FORBIDDEN") {
		t.Fatalf("mallory's event: %v, want it rejected", err)
	}
	return pdu.EventID()
}

type response struct {
	status int
	body   map[string]json.RawMessage
	raw    string
}

func (rm *room) do(t *testing.T, from, method, path, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, rm.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if from != "" {
		req.Header.Set("X-Test-Origin", from)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{status: resp.StatusCode, raw: string(raw)}
	if err := json.Unmarshal(raw, &out.body); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %s", method, path, raw)
	}
	return out
}

func (r response) strings(t *testing.T, key string) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal(r.body[key], &out); err != nil {
		t.Fatalf("%s: %v in %s", key, err, r.raw)
	}
	return out
}

// pdu is what the tests read of a served event.
type pdu struct {
	id      string
	body    string
	hasKeys bool // content has any keys
	raw     json.RawMessage
}

func (r response) pdus(t *testing.T, key string) []pdu {
	t.Helper()
	var list []json.RawMessage
	if err := json.Unmarshal(r.body[key], &list); err != nil {
		t.Fatalf("%s: %v in %s", key, err, r.raw)
	}
	out := make([]pdu, len(list))
	for i, js := range list {
		// The served JSON is a valid PDU of the room's version.
		p, err := gomatrixserverlib.MustGetRoomVersion("11").NewEventFromUntrustedJSON(js)
		if err != nil {
			t.Fatalf("served event %s: %v", js, err)
		}
		var c map[string]any
		_ = json.Unmarshal(p.Content(), &c)
		body, _ := c["body"].(string)
		if strings.Contains(string(js), `"unsigned"`) {
			t.Errorf("served event %s carries unsigned data", p.EventID())
		}
		out[i] = pdu{id: p.EventID(), body: body, hasKeys: len(c) > 0, raw: js}
	}
	return out
}

func ids(ps []pdu) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.id
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestHistoryEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		rm := newRoom(t, db)
		ctx := context.Background()
		esc := url.PathEscape
		stateBefore, err := rm.rs.StateIDsBefore(ctx, rm.after)
		if err != nil {
			t.Fatal(err)
		}
		var wantState []string
		for _, id := range stateBefore {
			wantState = append(wantState, id)
		}
		_, wantChain, err := rm.rs.StateIDsAtEvent(ctx, rm.id, rm.after)
		if err != nil {
			t.Fatal(err)
		}
		wantAuth, err := rm.rs.AuthChainIDs(ctx, rm.id, rm.after)
		if err != nil {
			t.Fatal(err)
		}
		room := "/_matrix/federation/v1"
		for _, c := range []struct {
			name, from, method, path, body string
			status                         int
			code                           string
			check                          func(t *testing.T, r response)
		}{
			{name: "state_ids at an event", from: "remote", method: "GET", path: room + "/state_ids/" + esc(rm.id) + "?event_id=" + url.QueryEscape(rm.after), status: 200,
				check: func(t *testing.T, r response) {
					if got := r.strings(t, "pdu_ids"); !slices.Equal(sorted(got), sorted(wantState)) {
						t.Errorf("pdu_ids %v, want %v", got, wantState)
					}
					if got := r.strings(t, "auth_chain_ids"); len(got) == 0 || !slices.Equal(sorted(got), sorted(wantChain)) {
						t.Errorf("auth_chain_ids %v, want %v", got, wantChain)
					}
				}},
			{name: "state at an event", from: "remote", method: "GET", path: room + "/state/" + esc(rm.id) + "?event_id=" + url.QueryEscape(rm.after), status: 200,
				check: func(t *testing.T, r response) {
					if got := ids(r.pdus(t, "pdus")); !slices.Equal(sorted(got), sorted(wantState)) {
						t.Errorf("pdus %v, want %v", got, wantState)
					}
					if got := ids(r.pdus(t, "auth_chain")); !slices.Equal(sorted(got), sorted(wantChain)) {
						t.Errorf("auth_chain %v, want %v", got, wantChain)
					}
				}},
			{name: "event_auth", from: "remote", method: "GET", path: room + "/event_auth/" + esc(rm.id) + "/" + esc(rm.after), status: 200,
				check: func(t *testing.T, r response) {
					if got := ids(r.pdus(t, "auth_chain")); len(got) < 3 || !slices.Equal(sorted(got), sorted(wantAuth)) {
						t.Errorf("auth_chain %v, want %v", got, wantAuth)
					}
				}},
			{name: "the room's own server sees all", from: "test", method: "GET", path: room + "/state_ids/" + esc(rm.id) + "?event_id=" + url.QueryEscape(rm.before), status: 200},
			{name: "state_ids for a server not in the room", from: "elsewhere", method: "GET", path: room + "/state_ids/" + esc(rm.id) + "?event_id=" + url.QueryEscape(rm.after), status: 403, code: "M_FORBIDDEN"},
			{name: "state for a server not in the room", from: "elsewhere", method: "GET", path: room + "/state/" + esc(rm.id) + "?event_id=" + url.QueryEscape(rm.after), status: 403, code: "M_FORBIDDEN"},
			{name: "event_auth for a server not in the room", from: "elsewhere", method: "GET", path: room + "/event_auth/" + esc(rm.id) + "/" + esc(rm.after), status: 403, code: "M_FORBIDDEN"},
			{name: "backfill for a server not in the room", from: "elsewhere", method: "GET", path: room + "/backfill/" + esc(rm.id) + "?limit=5&v=" + url.QueryEscape(rm.last), status: 403, code: "M_FORBIDDEN"},
			{name: "get_missing_events for a server not in the room", from: "elsewhere", method: "POST", path: room + "/get_missing_events/" + esc(rm.id),
				body: `{"earliest_events":[],"latest_events":["` + rm.last + `"]}`, status: 403, code: "M_FORBIDDEN"},
			{name: "event for a server not in the room", from: "elsewhere", method: "GET", path: room + "/event/" + esc(rm.after), status: 403, code: "M_FORBIDDEN"},
			{name: "state at an event before the server's user joined", from: "remote", method: "GET", path: room + "/state_ids/" + esc(rm.id) + "?event_id=" + url.QueryEscape(rm.before), status: 403, code: "M_FORBIDDEN"},
			{name: "event", from: "remote", method: "GET", path: room + "/event/" + esc(rm.after), status: 200,
				check: func(t *testing.T, r response) {
					var origin string
					_ = json.Unmarshal(r.body["origin"], &origin)
					if ps := r.pdus(t, "pdus"); origin != "test" || len(ps) != 1 || ps[0].id != rm.after || ps[0].body != "after bob" || r.body["origin_server_ts"] == nil {
						t.Errorf("event: %s", r.raw)
					}
				}},
			{name: "an event the server may not see comes redacted", from: "remote", method: "GET", path: room + "/event/" + esc(rm.before), status: 200,
				check: func(t *testing.T, r response) {
					if ps := r.pdus(t, "pdus"); len(ps) != 1 || ps[0].id != rm.before || ps[0].hasKeys {
						t.Errorf("event before the join: %s", r.raw)
					}
				}},
			{name: "backfill walks back, newest first", from: "remote", method: "GET", path: room + "/backfill/" + esc(rm.id) + "?limit=4&v=" + url.QueryEscape(rm.last), status: 200,
				check: func(t *testing.T, r response) {
					ps := r.pdus(t, "pdus")
					if got := ids(ps); !slices.Equal(got, []string{rm.last, rm.after, rm.bobJoin, rm.before}) {
						t.Fatalf("backfill %v", got)
					}
					if ps[1].body != "after bob" || ps[3].hasKeys {
						t.Errorf("backfill shows %q and %v (the event before the join must be redacted)", ps[1].body, ps[3].hasKeys)
					}
				}},
			{name: "backfill from several events, comma-separated", from: "remote", method: "GET", path: room + "/backfill/" + esc(rm.id) + "?limit=2&v=" + url.QueryEscape(rm.after+","+rm.last), status: 200,
				check: func(t *testing.T, r response) {
					if got := ids(r.pdus(t, "pdus")); !slices.Equal(got, []string{rm.last, rm.after}) {
						t.Errorf("backfill %v", got)
					}
				}},
			{name: "backfill to the room's start", from: "remote", method: "GET", path: room + "/backfill/" + esc(rm.id) + "?limit=1000&v=" + url.QueryEscape(rm.last), status: 200,
				check: func(t *testing.T, r response) {
					ps := r.pdus(t, "pdus")
					var create struct {
						Type string `json:"type"`
					}
					_ = json.Unmarshal(ps[len(ps)-1].raw, &create)
					if create.Type != "m.room.create" || slices.Contains(ids(ps), rm.rejected) {
						t.Errorf("backfill to the start ends with %s: %v", create.Type, ids(ps))
					}
				}},
			{name: "get_missing_events stops at earliest_events", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc(rm.id),
				body: `{"earliest_events":["` + rm.before + `"],"latest_events":["` + rm.last + `"]}`, status: 200,
				check: func(t *testing.T, r response) {
					if got := ids(r.pdus(t, "events")); !slices.Equal(got, []string{rm.bobJoin, rm.after}) {
						t.Errorf("missing events %v", got)
					}
				}},
			{name: "get_missing_events respects limit", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc(rm.id),
				body: `{"limit":1,"min_depth":0,"earliest_events":["` + rm.before + `"],"latest_events":["` + rm.last + `"]}`, status: 200,
				check: func(t *testing.T, r response) {
					if got := ids(r.pdus(t, "events")); !slices.Equal(got, []string{rm.after}) {
						t.Errorf("missing events %v", got)
					}
				}},
			{name: "get_missing_events redacts what the server may not see", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc(rm.id),
				body: `{"limit":3,"earliest_events":[],"latest_events":["` + rm.last + `"]}`, status: 200,
				check: func(t *testing.T, r response) {
					ps := r.pdus(t, "events")
					if got := ids(ps); !slices.Equal(got, []string{rm.before, rm.bobJoin, rm.after}) {
						t.Fatalf("missing events %v", got)
					}
					if ps[0].hasKeys || ps[2].body != "after bob" {
						t.Errorf("missing events: %s", r.raw)
					}
				}},
			{name: "a rejected event is not served", from: "remote", method: "GET", path: room + "/event/" + esc(rm.rejected), status: 404, code: "M_NOT_FOUND"},
			{name: "no state at a rejected event", from: "remote", method: "GET", path: room + "/state_ids/" + esc(rm.id) + "?event_id=" + url.QueryEscape(rm.rejected), status: 404, code: "M_NOT_FOUND"},
			{name: "no auth chain of a rejected event", from: "remote", method: "GET", path: room + "/event_auth/" + esc(rm.id) + "/" + esc(rm.rejected), status: 404, code: "M_NOT_FOUND"},
			{name: "backfill from a rejected event", from: "remote", method: "GET", path: room + "/backfill/" + esc(rm.id) + "?limit=5&v=" + url.QueryEscape(rm.rejected), status: 200,
				check: func(t *testing.T, r response) {
					if got := r.pdus(t, "pdus"); len(got) != 0 {
						t.Errorf("backfill from a rejected event: %v", ids(got))
					}
				}},
			{name: "get_missing_events from a rejected event", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc(rm.id),
				body: `{"earliest_events":[],"latest_events":["` + rm.rejected + `"]}`, status: 200,
				check: func(t *testing.T, r response) {
					if got := r.pdus(t, "events"); len(got) != 0 {
						t.Errorf("missing events of a rejected event: %v", ids(got))
					}
				}},

			// Malformed requests: Matrix errors, never 500.
			{name: "unauthenticated", method: "GET", path: room + "/event/" + esc(rm.after), status: 401, code: "M_UNAUTHORIZED"},
			{name: "unknown event", from: "remote", method: "GET", path: room + "/event/" + esc("$nope"), status: 404, code: "M_NOT_FOUND"},
			{name: "event ID with a slash", from: "remote", method: "GET", path: room + "/event/" + esc("$a/b+c"), status: 404, code: "M_NOT_FOUND"},
			{name: "event ID with a NUL", from: "remote", method: "GET", path: room + "/event/%24a%00b", status: 400, code: "M_INVALID_PARAM"},
			{name: "event ID not UTF-8", from: "remote", method: "GET", path: room + "/event/%24%FF", status: 400, code: "M_INVALID_PARAM"},
			{name: "unknown room", from: "remote", method: "GET", path: room + "/state_ids/" + esc("!nope:test") + "?event_id=" + url.QueryEscape(rm.after), status: 404, code: "M_NOT_FOUND"},
			{name: "room ID with a NUL", from: "remote", method: "GET", path: room + "/state_ids/%21a%00?event_id=" + url.QueryEscape(rm.after), status: 400, code: "M_INVALID_PARAM"},
			{name: "state_ids without event_id", from: "remote", method: "GET", path: room + "/state_ids/" + esc(rm.id), status: 400, code: "M_MISSING_PARAM"},
			{name: "state with an empty event_id", from: "remote", method: "GET", path: room + "/state/" + esc(rm.id) + "?event_id=", status: 400, code: "M_INVALID_PARAM"},
			{name: "state_ids with a NUL event_id", from: "remote", method: "GET", path: room + "/state_ids/" + esc(rm.id) + "?event_id=%00", status: 400, code: "M_INVALID_PARAM"},
			{name: "state at an event of another room", from: "remote", method: "GET", path: room + "/state_ids/" + esc(rm.id) + "?event_id=" + url.QueryEscape("$nope"), status: 404, code: "M_NOT_FOUND"},
			{name: "backfill without v", from: "remote", method: "GET", path: room + "/backfill/" + esc(rm.id) + "?limit=5", status: 400, code: "M_MISSING_PARAM"},
			{name: "backfill without limit", from: "remote", method: "GET", path: room + "/backfill/" + esc(rm.id) + "?v=" + url.QueryEscape(rm.last), status: 400, code: "M_MISSING_PARAM"},
			{name: "backfill with limit 0", from: "remote", method: "GET", path: room + "/backfill/" + esc(rm.id) + "?limit=0&v=" + url.QueryEscape(rm.last), status: 400, code: "M_INVALID_PARAM"},
			{name: "backfill with a limit that is no number", from: "remote", method: "GET", path: room + "/backfill/" + esc(rm.id) + "?limit=ten&v=" + url.QueryEscape(rm.last), status: 400, code: "M_INVALID_PARAM"},
			{name: "backfill with a huge limit", from: "remote", method: "GET", path: room + "/backfill/" + esc(rm.id) + "?limit=99999999999999999999&v=" + url.QueryEscape(rm.last), status: 400, code: "M_INVALID_PARAM"},
			{name: "backfill with an empty v", from: "remote", method: "GET", path: room + "/backfill/" + esc(rm.id) + "?limit=5&v=", status: 400, code: "M_INVALID_PARAM"},
			{name: "backfill with a NUL in v", from: "remote", method: "GET", path: room + "/backfill/" + esc(rm.id) + "?limit=5&v=%24a%00", status: 400, code: "M_INVALID_PARAM"},
			{name: "backfill of an unknown room", from: "remote", method: "GET", path: room + "/backfill/" + esc("!nope:test") + "?limit=5&v=" + url.QueryEscape(rm.last), status: 404, code: "M_NOT_FOUND"},
			{name: "get_missing_events with no JSON", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc(rm.id), body: `nope`, status: 400, code: "M_NOT_JSON"},
			{name: "get_missing_events with a JSON array", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc(rm.id), body: `[]`, status: 400, code: "M_BAD_JSON"},
			{name: "get_missing_events without latest_events", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc(rm.id), body: `{"earliest_events":[]}`, status: 400, code: "M_BAD_JSON"},
			{name: "get_missing_events with latest_events of the wrong type", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc(rm.id), body: `{"latest_events":"x"}`, status: 400, code: "M_BAD_JSON"},
			{name: "get_missing_events with a negative limit", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc(rm.id), body: `{"limit":-1,"latest_events":[]}`, status: 400, code: "M_BAD_JSON"},
			{name: "get_missing_events with a negative min_depth", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc(rm.id), body: `{"min_depth":-1,"latest_events":[]}`, status: 400, code: "M_BAD_JSON"},
			{name: "get_missing_events with a NUL ID", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc(rm.id), body: `{"earliest_events":["\u0000"],"latest_events":["$a\u0000"]}`, status: 200},
			{name: "get_missing_events too large", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc(rm.id), body: `{"latest_events":["` + strings.Repeat("a", 300<<10) + `"]}`, status: 413, code: "M_TOO_LARGE"},
			{name: "get_missing_events of an unknown room", from: "remote", method: "POST", path: room + "/get_missing_events/" + esc("!nope:test"), body: `{"latest_events":[]}`, status: 404, code: "M_NOT_FOUND"},
		} {
			t.Run(c.name, func(t *testing.T) {
				r := rm.do(t, c.from, c.method, c.path, c.body)
				if r.status != c.status {
					t.Fatalf("status %d, want %d: %s", r.status, c.status, r.raw)
				}
				if c.code != "" {
					var code string
					_ = json.Unmarshal(r.body["errcode"], &code)
					if code != c.code {
						t.Fatalf("errcode %s, want %s: %s", code, c.code, r.raw)
					}
				}
				if c.check != nil {
					c.check(t, r)
				}
			})
		}
	})
}
