package sytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// eachDBEnv is eachDB with extra HAVEN_* settings for the servers.
func eachDBEnv(t *testing.T, env []string, fn func(t *testing.T, s *server)) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			fn(t, startServer(t, db, env...))
		})
	}
}

// apiResp is the raw answer to one HTTP request.
type apiResp struct {
	Method string
	Path   string
	Status int
	Header http.Header
	Raw    []byte
	// JSON is the body decoded as an object (nil when it is not one).
	JSON map[string]any
}

func (r apiResp) String() string {
	body := string(r.Raw)
	if len(body) > 600 {
		body = body[:600] + "…"
	}
	return fmt.Sprintf("%s %s → %d %s", r.Method, r.Path, r.Status, body)
}

// str returns a top-level string field of the body.
func (r apiResp) str(key string) string {
	s, _ := r.JSON[key].(string)
	return s
}

// expect asserts the status code.
func (r apiResp) expect(t *testing.T, status int) apiResp {
	t.Helper()
	if r.Status != status {
		t.Fatalf("want %d: %s", status, r)
	}
	return r
}

// expectErr asserts a Matrix error response with the given status and errcode.
func (r apiResp) expectErr(t *testing.T, status int, errcode string) apiResp {
	t.Helper()
	if r.Status != status || r.str("errcode") != errcode {
		t.Fatalf("want %d %s: %s", status, errcode, r)
	}
	if _, ok := r.JSON["error"].(string); !ok {
		t.Errorf("error response without an \"error\" string: %s", r)
	}
	return r
}

// wantErr is expectErr that lets the test go on.
func (r apiResp) wantErr(t *testing.T, status int, errcode string) bool {
	t.Helper()
	if r.Status != status || r.str("errcode") != errcode {
		t.Errorf("want %d %s: %s", status, errcode, r)
		return false
	}
	return true
}

// wantOneOf asserts one of several acceptable (status, errcode) answers.
func (r apiResp) wantOneOf(t *testing.T, what string, pairs ...any) {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if r.Status == pairs[i].(int) && r.str("errcode") == pairs[i+1].(string) {
			return
		}
	}
	t.Errorf("%s: want one of %v: %s", what, pairs, r)
}

// reqOpt changes an outgoing raw request.
type reqOpt func(*http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

// chunked sends the body without a Content-Length.
func chunked() reqOpt {
	return func(r *http.Request) {
		r.ContentLength = -1
		body := r.Body
		r.Body = io.NopCloser(body)
		r.GetBody = nil
	}
}

var txnCounter atomic.Int64

// txn returns a fresh transaction ID.
func txn() string { return fmt.Sprintf("sytest-%d-%d", time.Now().UnixNano(), txnCounter.Add(1)) }

// do sends a raw request. body is nil (no body), a string or []byte (sent as
// is) or anything else (sent as JSON). token may be empty. Any 5xx answer
// fails the test: no request of the suite may make the server fail.
func (s *server) do(t *testing.T, method, path, token string, body any, opts ...reqOpt) apiResp {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	r := apiResp{Method: method, Path: path, Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	_ = json.Unmarshal(raw, &r.JSON)
	if r.Status >= 500 {
		t.Errorf("server error: %s", r)
	}
	return r
}

// p escapes one path segment (room IDs, aliases, event IDs, user IDs).
func p(s any) string { return url.PathEscape(fmt.Sprint(s)) }

const v3 = "/_matrix/client/v3"

// rawSync runs GET /sync with the given query and decodes the answer both
// with mautrix and as a plain map.
func (s *server) rawSync(t *testing.T, cli *mautrix.Client, q url.Values) (*mautrix.RespSync, map[string]any) {
	t.Helper()
	path := v3 + "/sync"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	r := s.do(t, "GET", path, cli.AccessToken, nil).expect(t, 200)
	var resp mautrix.RespSync
	if err := json.Unmarshal(r.Raw, &resp); err != nil {
		t.Fatalf("decode sync: %v\n%s", err, r.Raw)
	}
	return &resp, r.JSON
}

// eventually polls cond until it holds or 15 seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// syncUntil runs incremental syncs from since (an initial sync when empty)
// until cond holds on one response; it returns that response and the token
// after it.
func syncUntil(t *testing.T, cli *mautrix.Client, since, what string, cond func(r *mautrix.RespSync) bool) (*mautrix.RespSync, string) {
	t.Helper()
	return syncUntilFilter(t, cli, since, "", what, cond)
}

func syncUntilFilter(t *testing.T, cli *mautrix.Client, since, filter, what string, cond func(r *mautrix.RespSync) bool) (*mautrix.RespSync, string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: since, Timeout: 2000, FilterID: filter})
		cancel()
		if err != nil {
			t.Fatalf("sync of %s while waiting for %s: %v", cli.UserID, what, err)
		}
		since = resp.NextBatch
		if cond(resp) {
			return resp, since
		}
	}
	t.Fatalf("%s never saw %s", cli.UserID, what)
	return nil, ""
}

// syncNow returns the token of an immediate sync (initial when since is empty).
func syncNow(t *testing.T, cli *mautrix.Client, since string) (*mautrix.RespSync, string) {
	t.Helper()
	resp, err := cli.FullSyncRequest(context.Background(), mautrix.ReqSync{Since: since})
	if err != nil {
		t.Fatalf("sync of %s: %v", cli.UserID, err)
	}
	return resp, resp.NextBatch
}

// findEvent returns the first event of the given type (and state key, when
// not nil) in the list.
func findEvent(evs []*event.Event, typ string, stateKey *string) *event.Event {
	for _, ev := range evs {
		if ev.Type.Type != typ {
			continue
		}
		if stateKey != nil && (ev.StateKey == nil || *ev.StateKey != *stateKey) {
			continue
		}
		return ev
	}
	return nil
}

func sk(s any) *string { v := fmt.Sprint(s); return &v }

// eventIDs lists the IDs of events.
func eventIDs(evs []*event.Event) []string {
	out := make([]string, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.ID.String())
	}
	return out
}

func hasEventID(evs []*event.Event, eid id.EventID) bool {
	for _, ev := range evs {
		if ev.ID == eid {
			return true
		}
	}
	return false
}

func bodies(evs []*event.Event) []string {
	var out []string
	for _, ev := range evs {
		if b, ok := ev.Content.Raw["body"].(string); ok {
			out = append(out, b)
		}
	}
	return out
}

// httpErr returns the status and errcode of a mautrix error.
func httpErr(err error) (int, string) {
	var he mautrix.HTTPError
	if !errors.As(err, &he) {
		return 0, ""
	}
	if he.RespError != nil {
		return he.RespError.StatusCode, he.RespError.ErrCode
	}
	if he.Response != nil {
		return he.Response.StatusCode, ""
	}
	return 0, ""
}

// mustErr asserts that a mautrix call failed with the status and errcode.
func mustErr(t *testing.T, what string, err error, status int, errcode string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want %d %s", what, status, errcode)
	}
	st, code := httpErr(err)
	if st != status || code != errcode {
		t.Fatalf("%s: %v (status %d, errcode %q), want %d %s", what, err, st, code, status, errcode)
	}
}

func createRoom(t *testing.T, cli *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	resp, err := cli.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatalf("createRoom by %s: %v", cli.UserID, err)
	}
	return resp.RoomID
}

func sendText(t *testing.T, cli *mautrix.Client, room id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := cli.SendText(context.Background(), room, body)
	if err != nil {
		t.Fatalf("send %q by %s: %v", body, cli.UserID, err)
	}
	return resp.EventID
}

func join(t *testing.T, cli *mautrix.Client, roomIDOrAlias string) {
	t.Helper()
	if _, err := cli.JoinRoom(context.Background(), roomIDOrAlias, nil); err != nil {
		t.Fatalf("%s joins %s: %v", cli.UserID, roomIDOrAlias, err)
	}
}

func invite(t *testing.T, cli *mautrix.Client, room id.RoomID, user id.UserID) {
	t.Helper()
	if _, err := cli.InviteUser(context.Background(), room, &mautrix.ReqInviteUser{UserID: user}); err != nil {
		t.Fatalf("%s invites %s to %s: %v", cli.UserID, user, room, err)
	}
}

// allMessages pages /messages backwards from the end to the room's creation.
func allMessages(t *testing.T, cli *mautrix.Client, room id.RoomID) []*event.Event {
	t.Helper()
	var all []*event.Event
	from := ""
	for page := 0; page < 500; page++ {
		resp, err := cli.Messages(context.Background(), room, from, "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatalf("messages of %s: %v", room, err)
		}
		all = append(all, resp.Chunk...)
		if resp.End == "" || len(resp.Chunk) == 0 {
			break
		}
		from = resp.End
	}
	return all
}

// memberOf reports whether a state list has the user's member event with that membership.
func memberOf(evs []*event.Event, user id.UserID, membership string) bool {
	for _, ev := range evs {
		if ev.Type.Type == "m.room.member" && ev.GetStateKey() == user.String() && ev.Content.Raw["membership"] == membership {
			return true
		}
	}
	return false
}
