package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger returns a JSON logger at debug level writing into a buffer.
func testLogger(t *testing.T) (*logrus.Logger, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	log, err := logging.New("json", "debug", buf)
	if err != nil {
		t.Fatal(err)
	}
	return log, buf
}

// logLines decodes every JSON log line in buf.
func logLines(t *testing.T, buf *syncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// decodeBody decodes a JSON response body into a map.
func decodeBody(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("body is not a JSON object: %q: %v", rec.Body.String(), err)
	}
	return m
}

func TestWriteErrorMapsMatrixErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
		msg    string
		extra  map[string]any
		retry  string // expected Retry-After header; "" means absent
	}{
		{name: "forbidden", err: merr.Forbidden("You are not joined to this room"), status: 403, code: "M_FORBIDDEN", msg: "You are not joined to this room"},
		{name: "not found formatted", err: merr.NotFound("Room %s not found", "!a:b"), status: 404, code: "M_NOT_FOUND", msg: "Room !a:b not found"},
		{name: "too large", err: merr.TooLarge("too big"), status: 413, code: "M_TOO_LARGE", msg: "too big"},
		{name: "method not allowed", err: merr.MethodNotAllowed(), status: 405, code: "M_UNRECOGNIZED", msg: "Unrecognized request method"},
		{name: "unknown token soft logout", err: merr.UnknownToken(true, "Token expired"), status: 401, code: "M_UNKNOWN_TOKEN", msg: "Token expired",
			extra: map[string]any{"soft_logout": true}},
		{name: "limit exceeded", err: merr.LimitExceeded(1500), status: 429, code: "M_LIMIT_EXCEEDED", msg: "Too many requests",
			extra: map[string]any{"retry_after_ms": float64(1500)}, retry: "2"},
		{name: "limit exceeded exact second", err: merr.LimitExceeded(3000), status: 429, code: "M_LIMIT_EXCEEDED", msg: "Too many requests",
			extra: map[string]any{"retry_after_ms": float64(3000)}, retry: "3"},
		{name: "retry_after_ms as int on another code", err: merr.Custom(503, "M_RESOURCE_LIMIT_EXCEEDED", "busy").With("retry_after_ms", 250), status: 503,
			code: "M_RESOURCE_LIMIT_EXCEEDED", msg: "busy", extra: map[string]any{"retry_after_ms": float64(250)}, retry: "1"},
		{name: "wrapped with fmt", err: fmt.Errorf("set typing: %w", merr.Forbidden("nope")), status: 403, code: "M_FORBIDDEN", msg: "nope"},
		{name: "cause is not sent", err: merr.NotFound("no such room").Wrap(errors.New("select room: secret detail")), status: 404, code: "M_NOT_FOUND", msg: "no such room"},
		{name: "uia body", err: merr.Unauthorized("auth needed").With("session", "abc").With("flows", []map[string]any{{"stages": []string{"m.login.password"}}}),
			status: 401, code: "M_UNAUTHORIZED", msg: "auth needed",
			extra: map[string]any{"session": "abc", "flows": []any{map[string]any{"stages": []any{"m.login.password"}}}}},
		{name: "extra cannot override errcode", err: merr.Forbidden("x").With("errcode", "M_HACKED").With("error", "y"), status: 403, code: "M_FORBIDDEN", msg: "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			r := httptest.NewRequest("GET", "/x", nil)
			log, _ := testLogger(t)
			r = r.WithContext(logging.With(r.Context(), logrus.NewEntry(log)))
			WriteError(rec, r, tc.err)
			if rec.Code != tc.status {
				t.Errorf("status = %d, want %d", rec.Code, tc.status)
			}
			body := decodeBody(t, rec)
			if body["errcode"] != tc.code || body["error"] != tc.msg {
				t.Errorf("body = %v, want errcode %s error %q", body, tc.code, tc.msg)
			}
			for k, want := range tc.extra {
				if got, _ := json.Marshal(body[k]); string(got) != mustJSON(t, want) {
					t.Errorf("field %s = %s, want %s", k, got, mustJSON(t, want))
				}
			}
			if len(body) != 2+len(tc.extra) {
				t.Errorf("unexpected fields in %v", body)
			}
			if got := rec.Header().Get("Retry-After"); got != tc.retry {
				t.Errorf("Retry-After = %q, want %q", got, tc.retry)
			}
			if strings.Contains(rec.Body.String(), "secret detail") {
				t.Errorf("cause leaked to the client: %s", rec.Body.String())
			}
			if rec.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q", rec.Header().Get("Cache-Control"))
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWriteErrorPlainErrorIsLoggedOnce(t *testing.T) {
	log, buf := testLogger(t)
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/x", nil)
	r = r.WithContext(logging.With(r.Context(), logrus.NewEntry(log)))
	WriteError(rec, r, fmt.Errorf("insert event $abc: %w", errors.New("disk full")))
	if rec.Code != 500 {
		t.Fatalf("status = %d", rec.Code)
	}
	body := decodeBody(t, rec)
	if body["errcode"] != "M_UNKNOWN" || body["error"] != "Internal server error" {
		t.Fatalf("body = %v", body)
	}
	if strings.Contains(rec.Body.String(), "disk full") {
		t.Fatalf("internal detail sent to the client: %s", rec.Body.String())
	}
	lines := logLines(t, buf)
	if len(lines) != 1 {
		t.Fatalf("want exactly one log line, got %d:\n%s", len(lines), buf.String())
	}
	if lines[0]["level"] != "error" || !strings.Contains(fmt.Sprint(lines[0]["error"]), "disk full") {
		t.Fatalf("log line = %v", lines[0])
	}
}

func TestWriteErrorMatrixErrorsBelow500AreNotLogged(t *testing.T) {
	log, buf := testLogger(t)
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/x", nil)
	r = r.WithContext(logging.With(r.Context(), logrus.NewEntry(log)))
	WriteError(rec, r, merr.Forbidden("no"))
	if buf.String() != "" {
		t.Fatalf("a 4xx error was logged: %s", buf.String())
	}
	WriteError(httptest.NewRecorder(), r, merr.Custom(502, "M_UNKNOWN", "upstream").Wrap(errors.New("dial tcp: refused")))
	if n := len(logLines(t, buf)); n != 1 {
		t.Fatalf("a 5xx Matrix error should be logged once, got %d lines:\n%s", n, buf.String())
	}
}

func TestWriteErrorCancelledByClient(t *testing.T) {
	log, buf := testLogger(t)
	log.SetLevel(logrus.InfoLevel)
	ctx, cancel := context.WithCancel(logging.With(context.Background(), logrus.NewEntry(log)))
	cancel()
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/x", nil).WithContext(ctx)
	WriteError(rec, r, fmt.Errorf("query: %w", context.Canceled))
	if rec.Code != 499 {
		t.Fatalf("status = %d, want 499", rec.Code)
	}
	if buf.String() != "" {
		t.Fatalf("a client disconnect was logged at info or above: %s", buf.String())
	}
}

func TestWriteErrorUnencodableExtra(t *testing.T) {
	log, buf := testLogger(t)
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/x", nil)
	r = r.WithContext(logging.With(r.Context(), logrus.NewEntry(log)))
	WriteError(rec, r, merr.Forbidden("x").With("bad", math.NaN()))
	if rec.Code != 500 {
		t.Fatalf("status = %d, want 500", rec.Code)
	}
	if body := decodeBody(t, rec); body["errcode"] != "M_UNKNOWN" {
		t.Fatalf("body = %v", body)
	}
	if !strings.Contains(buf.String(), "cannot encode error body") {
		t.Fatalf("not logged: %s", buf.String())
	}
}

func TestHandle(t *testing.T) {
	h := Handle(func(w http.ResponseWriter, r *http.Request) error {
		if r.URL.Query().Get("fail") != "" {
			return merr.NotFound("gone")
		}
		return OK(w)
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || rec.Body.String() != "{}" {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/?fail=1", nil))
	if rec.Code != 404 || decodeBody(t, rec)["errcode"] != "M_NOT_FOUND" {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
}

type typingRequest struct {
	Typing  bool   `json:"typing"`
	Timeout int64  `json:"timeout"`
	Name    string `json:"name"`
	Nested  struct {
		Count int `json:"count"`
	} `json:"nested"`
}

// lyingBody is a request body whose Content-Length may differ from its length.
func request(body string, contentLength int64) *http.Request {
	r := httptest.NewRequest("PUT", "/typing", strings.NewReader(body))
	r.ContentLength = contentLength
	return r
}

func TestDecodeJSON(t *testing.T) {
	const limit = 64
	big := `{"name":"` + strings.Repeat("a", limit) + `"}`
	exact := `{"name":"` + strings.Repeat("a", limit-11) + `"}`
	if len(exact) != limit {
		t.Fatalf("test body is %d bytes", len(exact))
	}
	for _, tc := range []struct {
		name string
		req  *http.Request
		code string // "" means success
		want typingRequest
	}{
		{name: "object", req: request(`{"typing":true,"timeout":3000}`, -1), want: typingRequest{Typing: true, Timeout: 3000}},
		{name: "surrounding whitespace", req: request(" \n\t{\"typing\":true}\r\n ", -1), want: typingRequest{Typing: true}},
		{name: "unknown fields ignored", req: request(`{"typing":true,"x":[1,2]}`, -1), want: typingRequest{Typing: true}},
		{name: "empty body is {}", req: request("", 0)},
		{name: "whitespace body is {}", req: request("  \n", -1)},
		{name: "nil body is {}", req: func() *http.Request { r := request("", 0); r.Body = nil; return r }()},
		{name: "exactly the limit", req: request(exact, int64(len(exact))), want: typingRequest{Name: strings.Repeat("a", limit-11)}},
		{name: "not JSON", req: request(`typing=true`, -1), code: "M_NOT_JSON"},
		{name: "truncated JSON", req: request(`{"typing":`, -1), code: "M_NOT_JSON"},
		{name: "trailing garbage", req: request(`{"typing":true}x`, -1), code: "M_NOT_JSON"},
		{name: "two objects", req: request(`{}{}`, -1), code: "M_NOT_JSON"},
		{name: "array", req: request(`[{"typing":true}]`, -1), code: "M_BAD_JSON"},
		{name: "string", req: request(`"typing"`, -1), code: "M_BAD_JSON"},
		{name: "number", req: request(`42`, -1), code: "M_BAD_JSON"},
		{name: "null", req: request(`null`, -1), code: "M_BAD_JSON"},
		{name: "wrong type bool", req: request(`{"typing":"yes"}`, -1), code: "M_BAD_JSON"},
		{name: "wrong type int", req: request(`{"timeout":"3000"}`, -1), code: "M_BAD_JSON"},
		{name: "fraction for int", req: request(`{"timeout":1.5}`, -1), code: "M_BAD_JSON"},
		{name: "overflow", req: request(`{"timeout":1e40}`, -1), code: "M_BAD_JSON"},
		{name: "wrong nested type", req: request(`{"nested":{"count":"x"}}`, -1), code: "M_BAD_JSON"},
		{name: "object for string", req: request(`{"name":{}}`, -1), code: "M_BAD_JSON"},
		{name: "invalid UTF-8 in a string", req: request("{\"name\":\"\xff\xfe\"}", -1), code: "M_NOT_JSON"},
		{name: "encoded surrogate in a string", req: request("{\"name\":\"\xed\xa0\x80\"}", -1), code: "M_NOT_JSON"},
		{name: "invalid UTF-8 in a key", req: request("{\"\xc3\":1}", -1), code: "M_NOT_JSON"},
		{name: "valid UTF-8", req: request(`{"name":"☃😀"}`, -1), want: typingRequest{Name: "☃😀"}},
		{name: "too large by Content-Length", req: request(`{}`, limit+1), code: "M_TOO_LARGE"},
		{name: "too large without Content-Length", req: request(big, -1), code: "M_TOO_LARGE"},
		{name: "too large with a lying Content-Length", req: request(big, 10), code: "M_TOO_LARGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got typingRequest
			err := DecodeJSON(tc.req, &got, limit)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if got != tc.want {
					t.Fatalf("decoded %+v, want %+v", got, tc.want)
				}
				return
			}
			me, ok := err.(*merr.Error)
			if !ok {
				t.Fatalf("error %v (%T) is not a *merr.Error", err, err)
			}
			if me.Code != tc.code {
				t.Fatalf("errcode = %s (%s), want %s", me.Code, me.Msg, tc.code)
			}
			wantStatus := 400
			if tc.code == "M_TOO_LARGE" {
				wantStatus = 413
			}
			if me.Status != wantStatus {
				t.Fatalf("status = %d, want %d", me.Status, wantStatus)
			}
		})
	}
}

func TestDecodeJSONWrongTypeNamesTheField(t *testing.T) {
	var v typingRequest
	err := DecodeJSON(request(`{"nested":{"count":"x"}}`, -1), &v, 1024)
	me, ok := merr.As(err)
	if !ok || me.Code != "M_BAD_JSON" || !strings.Contains(me.Msg, "nested.count") {
		t.Fatalf("got %v", err)
	}
}

// countingReader counts how much of a body was read.
type countingReader struct {
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	c.n += int64(len(p))
	return len(p), nil
}

func TestReadBodyStopsAtTheLimit(t *testing.T) {
	// An endless body with no Content-Length: reading must stop just past the limit.
	src := &countingReader{}
	r := httptest.NewRequest("POST", "/", io.NopCloser(src))
	r.ContentLength = -1
	_, err := ReadBody(r, 1000)
	if !merr.Is(err, "M_TOO_LARGE") {
		t.Fatalf("got %v", err)
	}
	if src.n > 64<<10 {
		t.Fatalf("read %d bytes of an endless body with a limit of 1000", src.n)
	}
}

func TestReadBodyMaxBytesReader(t *testing.T) {
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/", strings.NewReader(strings.Repeat("x", 100)))
	r.ContentLength = -1
	r.Body = http.MaxBytesReader(rec, r.Body, 10)
	_, err := ReadBody(r, 1000)
	if !merr.Is(err, "M_TOO_LARGE") {
		t.Fatalf("a server-wide body limit should be M_TOO_LARGE, got %v", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestReadBodyReadError(t *testing.T) {
	r := httptest.NewRequest("POST", "/", io.NopCloser(failingReader{}))
	r.ContentLength = -1
	_, err := ReadBody(r, 1000)
	if _, ok := err.(*merr.Error); !ok {
		t.Fatalf("got %v (%T)", err, err)
	}
}

func TestReadBodyHugeLimit(t *testing.T) {
	r := request(`{"typing":true}`, -1)
	body, err := ReadBody(r, math.MaxInt64)
	if err != nil || string(body) != `{"typing":true}` {
		t.Fatalf("got %q, %v", body, err)
	}
}

// roomID rejects a malformed value with its own Matrix error.
type roomID string

func (id *roomID) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if !strings.HasPrefix(s, "!") {
		return merr.InvalidParam("room_id must start with !")
	}
	*id = roomID(s)
	return nil
}

func TestUnmarshalKeepsMatrixErrorsOfFieldTypes(t *testing.T) {
	var v struct {
		Room roomID `json:"room_id"`
	}
	err := Unmarshal([]byte(`{"room_id":"abc"}`), &v)
	if !merr.Is(err, "M_INVALID_PARAM") {
		t.Fatalf("got %v", err)
	}
	if err := Unmarshal([]byte(`{"room_id":"!abc:x"}`), &v); err != nil || v.Room != "!abc:x" {
		t.Fatalf("got %v, %q", err, v.Room)
	}
}

func TestAccessLogRecoversPanics(t *testing.T) {
	log, buf := testLogger(t)
	before := PanicsTotal.Load()
	h := AccessLog(log, nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("nil map write in handler")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/_matrix/client/v3/sync?access_token=syt_secret_token&since=s1", nil))
	if rec.Code != 500 {
		t.Fatalf("status = %d", rec.Code)
	}
	body := decodeBody(t, rec)
	if body["errcode"] != "M_UNKNOWN" {
		t.Fatalf("body = %v", body)
	}
	if strings.Contains(rec.Body.String(), "nil map") {
		t.Fatalf("panic value sent to the client: %s", rec.Body.String())
	}
	if got := PanicsTotal.Load() - before; got != 1 {
		t.Fatalf("PanicsTotal grew by %d, want 1", got)
	}
	lines := logLines(t, buf)
	var panicked, access int
	for _, l := range lines {
		switch l["msg"] {
		case "handler panicked":
			panicked++
			if !strings.Contains(fmt.Sprint(l["stack"]), "goroutine") {
				t.Errorf("panic logged without a stack: %v", l)
			}
		case "request":
			access++
			if l["status"] != float64(500) || l["errcode"] != "M_UNKNOWN" {
				t.Errorf("access line = %v", l)
			}
		default:
			t.Errorf("unexpected log line %v", l)
		}
	}
	if panicked != 1 || access != 1 {
		t.Fatalf("want one panic line and one access line:\n%s", buf.String())
	}
	for _, secret := range []string{"syt_secret_token", "access_token", "since=s1", "sync?"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("log contains %q:\n%s", secret, buf.String())
		}
	}
}

func TestAccessLogAbortHandlerIsNotSwallowed(t *testing.T) {
	log, _ := testLogger(t)
	h := AccessLog(log, nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	defer func() {
		if p := recover(); p != http.ErrAbortHandler {
			t.Fatalf("recovered %v, want http.ErrAbortHandler", p)
		}
	}()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
}

func TestAccessLogLine(t *testing.T) {
	log, buf := testLogger(t)
	var observed []int
	var mu sync.Mutex
	h := AccessLog(log, func(r *http.Request, ri *RequestInfo, status int, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		observed = append(observed, status)
		if ri.ID == "" || d < 0 {
			t.Errorf("observer got %+v %v", ri, d)
		}
	})(Handle(func(w http.ResponseWriter, r *http.Request) error {
		ri := Info(r.Context())
		if ri == nil {
			return errors.New("no request info")
		}
		ri.UserID, ri.DeviceID = "@alice:example.com", "DEV1"
		logging.From(r.Context()).Info("inside handler")
		if r.Header.Get("Authorization") != "" {
			return merr.Forbidden("no")
		}
		return OK(w)
	}))
	for _, req := range []*http.Request{
		httptest.NewRequest("GET", "/_matrix/client/v3/account/whoami?access_token=syt_query_token", nil),
		func() *http.Request {
			r := httptest.NewRequest("PUT", "/_matrix/client/v3/rooms/x/typing/y", strings.NewReader(`{"password":"pw1"}`))
			r.Header.Set("Authorization", "Bearer syt_header_token")
			return r
		}(),
	} {
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	lines := logLines(t, buf)
	if len(lines) != 4 {
		t.Fatalf("want 4 lines, got:\n%s", buf.String())
	}
	// The handler's own line and the access line share the request ID.
	if lines[0]["req_id"] == "" || lines[0]["req_id"] != lines[1]["req_id"] || lines[1]["req_id"] == lines[3]["req_id"] {
		t.Fatalf("request IDs: %v", lines)
	}
	access := lines[1]
	for k, want := range map[string]any{"msg": "request", "method": "GET", "path": "/_matrix/client/v3/account/whoami",
		"status": float64(200), "user_id": "@alice:example.com", "device_id": "DEV1"} {
		if access[k] != want {
			t.Errorf("%s = %v, want %v", k, access[k], want)
		}
	}
	if _, ok := access["duration_ms"].(float64); !ok {
		t.Errorf("no duration_ms in %v", access)
	}
	if lines[3]["status"] != float64(403) || lines[3]["errcode"] != "M_FORBIDDEN" {
		t.Errorf("second access line = %v", lines[3])
	}
	for _, secret := range []string{"syt_query_token", "syt_header_token", "access_token", "pw1", "Bearer"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("log contains %q:\n%s", secret, buf.String())
		}
	}
	if len(observed) != 2 || observed[0] != 200 || observed[1] != 403 {
		t.Errorf("observer saw %v", observed)
	}
}

func TestCORS(t *testing.T) {
	called := false
	h := CORS(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called = true
		_ = OK(w)
	}))
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("OPTIONS", "/_matrix/client/v3/login", nil)
	r.Header.Set("Origin", "https://app.element.io")
	r.Header.Set("Access-Control-Request-Method", "POST")
	r.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	h.ServeHTTP(rec, r)
	if rec.Code != 200 {
		t.Fatalf("preflight status = %d", rec.Code)
	}
	if called {
		t.Fatal("preflight reached the handler")
	}
	if rec.Body.String() != "{}" || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("preflight body %q, Content-Type %q", rec.Body.String(), rec.Header().Get("Content-Type"))
	}
	hd := rec.Header()
	if hd.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("Allow-Origin = %q", hd.Get("Access-Control-Allow-Origin"))
	}
	allowed := strings.ToLower(hd.Get("Access-Control-Allow-Headers"))
	for _, want := range []string{"authorization", "content-type", "x-requested-with"} {
		if !strings.Contains(allowed, want) {
			t.Errorf("Allow-Headers %q lacks %s", allowed, want)
		}
	}
	methods := hd.Get("Access-Control-Allow-Methods")
	for _, want := range []string{"GET", "POST", "PUT", "DELETE", "OPTIONS"} {
		if !strings.Contains(methods, want) {
			t.Errorf("Allow-Methods %q lacks %s", methods, want)
		}
	}

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/_matrix/client/versions", nil))
	if !called || rec.Code != 200 || rec.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("GET: called=%v status=%d headers=%v", called, rec.Code, rec.Header())
	}
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		name, header, url, want string
	}{
		{"header", "Bearer syt_abc", "/", "syt_abc"},
		{"header any case", "bearer syt_abc", "/", "syt_abc"},
		{"header extra spaces", "Bearer   syt_abc  ", "/", "syt_abc"},
		{"query", "", "/x?access_token=syt_q", "syt_q"},
		{"query escaped", "", "/x?access_token=a%2Bb%20c", "a+b c"},
		{"header wins over query", "Bearer syt_h", "/x?access_token=syt_q", "syt_h"},
		{"other scheme", "Basic dXNlcjpwYXNz", "/x?access_token=syt_q", ""},
		{"bearer without token", "Bearer", "/", ""},
		{"bearer with blank token", "Bearer    ", "/", ""},
		{"none", "", "/", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.url, nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			if got := BearerToken(r); got != tc.want {
				t.Fatalf("BearerToken = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestJSONAndStatusWriter(t *testing.T) {
	rec := httptest.NewRecorder()
	sw := &StatusWriter{ResponseWriter: rec}
	if err := JSON(sw, 201, map[string]string{"event_id": "$e"}); err != nil {
		t.Fatal(err)
	}
	if sw.Status != 201 || sw.Bytes != int64(len(`{"event_id":"$e"}`)) || rec.Body.String() != `{"event_id":"$e"}` {
		t.Fatalf("status %d bytes %d body %s", sw.Status, sw.Bytes, rec.Body.String())
	}
	if err := JSON(httptest.NewRecorder(), 200, make(chan int)); err == nil {
		t.Fatal("encoding a channel should fail")
	}
	sw = &StatusWriter{ResponseWriter: httptest.NewRecorder()}
	_, _ = sw.Write([]byte("x"))
	if sw.Status != 200 {
		t.Fatalf("implicit status = %d", sw.Status)
	}
	if http.NewResponseController(sw).Flush() != nil {
		t.Fatal("flush should reach the recorder")
	}
}
