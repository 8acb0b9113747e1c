package sytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/logging"
	haven "github.com/haven-chat/haven/server"
)

// hostileRoute is one method and chi pattern of the running server.
type hostileRoute struct{ Method, Path string }

// serverRoutes lists every route of the client API as the server wires it:
// it builds the same App that `haven serve` builds (on a throwaway SQLite
// directory, with the default settings the sweep's servers also have, save
// registration, hashing and rate limits, which add no routes) and walks its
// router, so the sweep covers a route as soon as it is added.
func serverRoutes(t *testing.T, env []string) []hostileRoute {
	t.Helper()
	dir := t.TempDir()
	env = append(append([]string(nil), env...), "HAVEN_DATA_DIR="+filepath.Join(dir, "data"), "HAVEN_LISTEN=127.0.0.1:0", "HAVEN_DATABASE=")
	cfg, probs := config.Load("", env)
	if len(probs) > 0 {
		t.Fatalf("config: %v", probs)
	}
	log, _ := logging.New("text", "error", io.Discard)
	a, err := haven.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mux, ok := a.HTTP.(chi.Routes)
	if !ok {
		t.Fatalf("the server's handler is a %T, not a chi router: teach serverRoutes to find the routes", a.HTTP)
	}
	var out []hostileRoute
	err = chi.Walk(mux, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		out = append(out, hostileRoute{method, route})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Method < out[j].Method
	})
	return out
}

// TestHostile sends every route of the server a battery of malformed,
// oversized, unauthorised and hostile requests (path parameters, bodies,
// query parameters; as a normal user, without a token and with a bogus one;
// the admin routes also as a server admin)
// and asserts that each gets a Matrix answer: never a 5xx (except the spec's
// 504 M_NOT_YET_UPLOADED), never a dropped connection, and every 4xx a JSON
// object with an M_ errcode and an error string. Afterwards the server must
// still be healthy and its log must hold no panic.
//
// Skips and adjustments, each on purpose:
//   - every request carries timeout=0 and timeout_ms=0 (the timeout=-5 and
//     repeated-parameter variants excepted), so /sync and media downloads of
//     pending uploads answer at once instead of long-polling;
//   - /logout and /logout/all run with a fresh device's token of another
//     user per request, so they do not end the sweep user's session;
//   - a 401 that carries the user-interactive auth "flows" (and so no
//     errcode: the spec's first answer of an UIA exchange) is accepted;
//   - /rooms/{roomId}/leave and /forget use a room of their own as their
//     baseline, so the other routes keep a room the user is joined to.
func TestHostile(t *testing.T) {
	routes := serverRoutes(t, nil)
	if len(routes) < 100 {
		t.Fatalf("only %d routes found", len(routes))
	}
	eachDB(t, func(t *testing.T, s *server) {
		hostileSweep(t, s, routes)
	})
}

// hostileBaseline holds valid values for the path parameters of the routes.
type hostileBaseline struct {
	server, user, device, token string
	room, event                 string // a room the user is in, and an event in it
	leaveRoom                   string // a room the leave and forget routes may leave
	otherRoom, otherEvent       string // a room the user is not in, and an event in it
	otherUser                   string
	filterID, mediaID, pending  string
	adminToken                  string // a server admin's, for the admin routes
	// adminUser and adminDevice are what the admin routes act on, so that
	// deactivating or logging out a user there spares the sweep's user.
	adminUser, adminDevice string
}

func hostileSetup(t *testing.T, s *server) hostileBaseline {
	t.Helper()
	alice := s.register(t, "hostile-alice")
	bob := s.register(t, "hostile-bob")
	s.register(t, "hostile-carol")        // logs out on the logout routes
	dave := s.register(t, "hostile-dave") // the admin routes' user
	b := hostileBaseline{adminToken: s.registerAdmin(t, "hostile-admin").AccessToken,
		server: alice.UserID.Homeserver(), user: alice.UserID.String(), device: alice.DeviceID.String(),
		token: alice.AccessToken, otherUser: bob.UserID.String(),
		adminUser: dave.UserID.String(), adminDevice: dave.DeviceID.String(),
	}
	room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	b.room, b.event = room.String(), sendText(t, alice, room, "hostile baseline").String()
	b.leaveRoom = createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"}).String()
	other := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	b.otherRoom, b.otherEvent = other.String(), sendText(t, bob, other, "not for alice").String()
	f := s.do(t, "POST", v3+"/user/"+p(b.user)+"/filter", b.token, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 5}}}).expect(t, 200)
	b.filterID = f.str("filter_id")
	up := s.do(t, "POST", "/_matrix/media/v3/upload?filename=a.txt", b.token, "hello", withHeader("Content-Type", "text/plain")).expect(t, 200)
	b.mediaID = up.str("content_uri")[strings.LastIndex(up.str("content_uri"), "/")+1:]
	cr := s.do(t, "POST", "/_matrix/media/v1/create", b.token, map[string]any{}).expect(t, 200)
	b.pending = cr.str("content_uri")[strings.LastIndex(cr.str("content_uri"), "/")+1:]
	return b
}

// value is a valid (already escaped) value of a path parameter.
func (b hostileBaseline) value(rt hostileRoute, name string) string {
	switch name {
	case "roomId", "roomIdOrAlias":
		if strings.HasSuffix(rt.Path, "/leave") || strings.HasSuffix(rt.Path, "/forget") {
			return p(b.leaveRoom)
		}
		return p(b.room)
	case "eventId":
		return p(b.event)
	case "userId":
		if strings.HasPrefix(rt.Path, "/_synapse/admin/") {
			return p(b.adminUser)
		}
		return p(b.user)
	case "deviceId":
		if strings.HasPrefix(rt.Path, "/_synapse/admin/") {
			return p(b.adminDevice)
		}
		return p(b.device)
	case "serverName":
		return p(b.server)
	case "mediaId":
		return p(b.mediaID)
	case "filterId":
		return p(b.filterID)
	case "roomAlias":
		return p("#hostile-alias:" + b.server)
	case "txnId":
		return p(txn())
	case "eventType":
		if strings.Contains(rt.Path, "/state/") {
			return "org.example.hostile"
		}
		return "m.room.message"
	case "stateKey":
		return "hostile"
	case "relType":
		return "m.thread"
	case "receiptType":
		return "m.read"
	case "kind":
		return "override"
	case "ruleId":
		return "hostile.rule"
	case "type":
		return "org.example.hostile"
	case "tag":
		return "u.hostile"
	case "version":
		return "1"
	case "sessionId":
		return "hostile-session"
	case "fileName":
		return "a.txt"
	case "*":
		if strings.Contains(rt.Path, "/pushrules/") {
			return "global/override/hostile.rule"
		}
	}
	return "hostile"
}

// hostileValues are the replacements tried for one path parameter
// (already escaped for the path).
func (b hostileBaseline) hostileValues(name string) map[string]string {
	vals := map[string]string{
		"space":     "%20",
		"dash":      "-",
		"10KB":      strings.Repeat("a", 10<<10),
		"NUL":       "a%00b",
		"badUTF8":   "%FF%FE",
		"dotdot":    "..%2F..%2F..",
		"unicode":   url.PathEscape("☃ snow 😀 \u202e"),
		"percent":   "%25zz",
		"missing":   "nonexistent",
		"wrongRoom": p("!nosuchroom:" + b.server),
		"wrongUser": p("@nobody:" + b.server),
		"wrongEvt":  p("$nosuchevent"),
		"otherHS":   p("!room:elsewhere.example"),
	}
	switch name {
	case "roomId", "roomIdOrAlias":
		vals["notJoined"] = p(b.otherRoom)
		vals["alias"] = p("#nosuchalias:" + b.server)
	case "eventId":
		vals["otherRoomEvt"] = p(b.otherEvent)
	case "userId":
		vals["otherUser"] = p(b.otherUser)
		vals["remoteUser"] = p("@someone:elsewhere.example")
	case "mediaId":
		vals["pending"] = p(b.pending)
	}
	return vals
}

// hostileBodies are the request bodies tried on POST, PUT and DELETE routes.
func hostileBodies() map[string][]byte {
	fields := []string{"room_id", "user_id", "event_id", "body", "msgtype", "limit", "timeout", "filter",
		"device_keys", "one_time_keys", "fallback_keys", "keys", "search_categories", "room_events", "search_term",
		"pushkey", "kind", "app_id", "data", "lang", "append", "rooms", "sessions", "auth", "type", "content",
		"displayname", "avatar_url", "visibility", "preset", "invite", "initial_state", "creation_content",
		"power_level_content_override", "name", "topic", "reason", "new_version", "room_alias_name", "room_version",
		"is_direct", "identifier", "password", "new_password", "logout_devices", "username", "device_id",
		"initial_device_display_name", "inhibit_login", "refresh_token", "token", "messages", "typing",
		"m.fully_read", "m.read", "m.read.private", "thread_id", "presence", "status_msg", "actions", "conditions",
		"pattern", "enabled", "devices", "master_key", "self_signing_key", "user_signing_key", "one_time_key_counts",
		"algorithm", "auth_data", "etag", "count", "version", "first_message_index", "forwarded_count",
		"is_verified", "session_data", "since", "server", "include_all_networks", "third_party_instance_id",
		"score", "tags", "order", "filter_id", "event_fields", "event_format", "presence_filter", "account_data",
		"room_ids", "nonce", "mac", "admin", "user_type", "order_by", "groupings", "event_context", "include_state",
		"keys_filter", "next_batch", "search_categories.room_events", "submit_url", "ttl", "uris", "expires_in_ms",
	}
	object := func(v any) []byte {
		m := make(map[string]any, len(fields))
		for _, f := range fields {
			m[f] = v
		}
		enc, _ := json.Marshal(m)
		return enc
	}
	// IDs that pass a sigil check but hold a NUL byte, by field name.
	nulIDs := make(map[string]any, len(fields))
	for _, f := range fields {
		switch {
		case strings.Contains(f, "room"):
			nulIDs[f] = "!a\x00b:localhost"
		case strings.Contains(f, "user") || f == "invite":
			nulIDs[f] = "@a\x00b:localhost"
		case strings.Contains(f, "event") || strings.HasPrefix(f, "m.") || f == "thread_id":
			nulIDs[f] = "$a\x00b"
		default:
			nulIDs[f] = "a\x00b"
		}
	}
	nulIDs["invite"] = []string{"@a\x00b:localhost"}
	nulIDs["room_ids"] = []string{"!a\x00b:localhost"}
	nulIDs["device_keys"] = map[string]any{"@a\x00b:localhost": []string{"D\x00"}}
	nulIDs["one_time_keys"] = map[string]any{"@a\x00b:localhost": map[string]string{"D\x00": "signed_curve25519"}}
	nulIDs["messages"] = map[string]any{"@a\x00b:localhost": map[string]any{"D\x00": map[string]any{}}}
	nulIDsBody, _ := json.Marshal(nulIDs)
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	big := append([]byte(`{"body":"`), bytes.Repeat([]byte("a"), 2<<20)...)
	big = append(big, `"}`...)
	return map[string][]byte{
		"none":         nil,
		"notJSON":      []byte(`{not json`),
		"array":        []byte(`[]`),
		"null":         []byte(`null`),
		"string":       []byte(`"str"`),
		"number":       []byte(`123`),
		"emptyObject":  []byte(`{}`),
		"fieldsString": object("str"),
		"fieldsObject": object(map[string]any{"a": map[string]any{"b": "c"}}),
		"fieldsArray":  object([]any{1, "x", nil}),
		"fieldsNeg":    object(-1),
		"fieldsHuge":   bytes.ReplaceAll(object(0), []byte(":0"), []byte(":999999999999999999999999999999")),
		"fieldsFloat":  bytes.ReplaceAll(object(0), []byte(":0"), []byte(":1e400")),
		"fieldsNull":   object(nil),
		"deep":         []byte(`{"content":` + deep + `,"body":` + deep + `,"device_keys":` + deep + `}`),
		"2MiB":         big,
		"badUTF8":      bytes.ReplaceAll(object("x"), []byte(`"x"`), []byte("\"\xff\xfe bad \xc3\"")),
		"nulString":    object("a\x00b"),
		"nulIDs":       nulIDsBody,
		"nulKeys": []byte(`{"one_time_keys":{"signed_curve25519:A\u0000":"k\u0000","curve25519:B":{"key":"\u0000"}},` +
			`"fallback_keys":{"signed_curve25519:F\u0000":{"key":"\u0000","fallback":true}},` +
			`"@hostile-alice:localhost":{"D\u0000":{"user_id":"@hostile-alice:localhost","device_id":"D\u0000","keys":{"ed25519:D\u0000":"\u0000"},"signatures":{"@hostile-alice:localhost":{"ed25519:\u0000":"\u0000"}}}},` +
			`"rooms":{"!a\u0000:localhost":{"sessions":{"s\u0000":{}}}},"sessions":{"s\u0000":{}}}`),
		"surrogates": bytes.ReplaceAll(object("x"), []byte(`"x"`), []byte(`"\ud800\udfff\udc00\ud83d"`)),
		"nulKey":     []byte(`{"a\u0000b":{"c\u0000":"\u0000"},"body":"\u0000","msgtype":"m.text\u0000"}`),
		"badUTF8Key": []byte("{\"\xff\xfe\":1,\"body\":\"\xed\xa0\x80\",\"msgtype\":\"m.text\"}"),
		"dupKeys":    []byte(`{"body":"a","body":{"x":1},"msgtype":"m.text","msgtype":7}`),
	}
}

// hostileQueries are the query strings tried on every route (each replaces
// the default timeout=0&timeout_ms=0, which the others keep).
var hostileQueries = map[string]string{
	"limitNeg":  "limit=-1&timeout=0&timeout_ms=0",
	"limitHuge": "limit=999999999999999999999&timeout=0&timeout_ms=0",
	"fromBad":   "from=garbage&to=garbage&since=garbage&timeout=0&timeout_ms=0",
	"dirBad":    "dir=x&timeout=0&timeout_ms=0",
	"timeout":   "timeout=-5&timeout_ms=-5",
	"filterBad": "filter=%7Bbad&timeout=0&timeout_ms=0",
	"filterID":  "filter=999999&timeout=0&timeout_ms=0",
	"repeated":  "limit=1&limit=2&from=a&from=b&dir=b&dir=f&timeout=0&timeout=0&timeout_ms=0&timeout_ms=1&filter=1&filter=2",
	"badUTF8":   "from=%FF%FE&dir=%FF&limit=%00&server=%FF&access_token=%FF&timeout=0&timeout_ms=0",
	"nul":       "from=a%00b&to=%00&since=%00&filter=%00&server=%00&dir=%00&limit=%00&user_id=%00&timeout=0&timeout_ms=0",
	"nulFilter": "filter=" + url.QueryEscape(`{"room":{"rooms":["!a\u0000b:localhost"],"not_rooms":["\u0000"],"timeline":{"senders":["@\u0000"],"types":["\u0000"]}}}`) + "&timeout=0&timeout_ms=0",
	"huge":      "from=" + strings.Repeat("x", 10<<10) + "&timeout=0&timeout_ms=0",
	"badParams": "allow_remote=maybe&set_presence=nope&full_state=x&width=-1&height=99999999999&method=x&url=%00&ts=-1&only=x&include=x&recurse=x&max_depth=-1&suggested_only=x&timeout=0&timeout_ms=0",
}

// hostileReq is one request of the sweep.
type hostileReq struct {
	route  hostileRoute
	what   string // which variant
	path   string // escaped path and query
	body   []byte
	token  string
	logout bool // needs a fresh device's token
}

// paramRE matches a pattern's parameters: {name} and a trailing * (the
// rest of the path, which the push rule routes parse themselves).
var paramRE = regexp.MustCompile(`\{([^}:]+)(:[^}]*)?\}|\*$`)

func (b hostileBaseline) requests(rt hostileRoute) []hostileReq {
	const defaultQuery = "timeout=0&timeout_ms=0"
	names := []string{}
	for _, m := range paramRE.FindAllStringSubmatch(rt.Path, -1) {
		name := m[1]
		if name == "" {
			name = "*"
		}
		names = append(names, name)
	}
	// build fills the pattern, replacing parameter i by repl (i < 0: none).
	build := func(i int, repl string) string {
		n := -1
		return paramRE.ReplaceAllStringFunc(rt.Path, func(string) string {
			n++
			if n == i {
				return repl
			}
			return b.value(rt, names[n])
		})
	}
	hasBody := rt.Method == "POST" || rt.Method == "PUT" || rt.Method == "DELETE"
	var baseBody []byte
	if hasBody {
		baseBody = []byte(`{}`)
	}
	logout := strings.HasSuffix(rt.Path, "/logout") || strings.HasSuffix(rt.Path, "/logout/all")
	var out []hostileReq
	add := func(what, path string, body []byte, token string) {
		out = append(out, hostileReq{route: rt, what: what, path: path, body: body, token: token, logout: logout && token == b.token})
	}
	base := build(-1, "") + "?" + defaultQuery
	add("baseline", base, baseBody, b.token)
	add("noToken", base, baseBody, "")
	add("bogusToken", base, baseBody, "syt_bogus_token_"+strings.Repeat("x", 20))
	add("bogusTokenBadBody", base, []byte(`{not json`), "syt_bogus")
	add("badUTF8Token", base, baseBody, "syt_\xff\xfe")
	add("queryTokenNUL", base+"&access_token=a%00%FF", baseBody, "")
	for i, name := range names {
		for what, v := range b.hostileValues(name) {
			add("param "+name+"="+what, build(i, v)+"?"+defaultQuery, baseBody, b.token)
		}
		add("param "+name+"=noToken", build(i, "%FF%00")+"?"+defaultQuery, baseBody, "")
	}
	if hasBody {
		for what, body := range hostileBodies() {
			add("body "+what, base, body, b.token)
		}
	}
	for what, q := range hostileQueries {
		add("query "+what, build(-1, "")+"?"+q, baseBody, b.token)
	}
	if strings.HasPrefix(rt.Path, "/_synapse/admin/") {
		// The same battery as a server admin, who gets past the auth check.
		for _, r := range out[:len(out):len(out)] {
			if r.token == b.token {
				r.what, r.token = "admin "+r.what, b.adminToken
				out = append(out, r)
			}
		}
	}
	return out
}

// hostileFailure is one broken answer of the sweep.
type hostileFailure struct {
	req    hostileReq
	status int
	errc   string
	detail string
}

func hostileSweep(t *testing.T, s *server, routes []hostileRoute) {
	b := hostileSetup(t, s)
	var reqs []hostileReq
	for _, rt := range routes {
		reqs = append(reqs, b.requests(rt)...)
	}
	const workers = 8
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true},
	}
	defer client.CloseIdleConnections()
	var (
		mu       sync.Mutex
		failures []hostileFailure
		slow     []string
		okCount  atomic.Int64
	)
	fail := func(f hostileFailure) {
		mu.Lock()
		failures = append(failures, f)
		mu.Unlock()
	}
	start := time.Now()
	work := make(chan hostileReq)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				token := r.token
				if r.logout {
					token = s.login(t, "hostile-carol").AccessToken
				}
				t0 := time.Now()
				status, raw, err := hostileDo(client, s.URL, r, token)
				if d := time.Since(t0); d > 5*time.Second {
					mu.Lock()
					slow = append(slow, fmt.Sprintf("%s %s [%s] took %v", r.route.Method, r.route.Path, r.what, d))
					mu.Unlock()
				}
				if err != nil {
					fail(hostileFailure{req: r, detail: "transport: " + err.Error()})
					continue
				}
				if status < 300 {
					okCount.Add(1)
				}
				if status >= 500 {
					var body map[string]any
					_ = json.Unmarshal(raw, &body)
					if code, _ := body["errcode"].(string); !(status == 504 && code == "M_NOT_YET_UPLOADED") {
						fail(hostileFailure{req: r, status: status, errc: code, detail: hostileSnippet(raw)})
						continue
					}
				}
				if status >= 400 {
					var body map[string]any
					if err := json.Unmarshal(raw, &body); err != nil || body == nil {
						fail(hostileFailure{req: r, status: status, detail: "not a JSON object: " + hostileSnippet(raw)})
						continue
					}
					if _, uia := body["flows"].([]any); uia && status == 401 && body["errcode"] == nil {
						continue
					}
					code, ok1 := body["errcode"].(string)
					_, ok2 := body["error"].(string)
					if !ok1 || !ok2 || !strings.HasPrefix(code, "M_") {
						fail(hostileFailure{req: r, status: status, errc: code, detail: "not a Matrix error: " + hostileSnippet(raw)})
					}
				}
			}
		}()
	}
	for _, r := range reqs {
		work <- r
	}
	close(work)
	wg.Wait()
	t.Logf("%d routes, %d requests (%d answered 2xx) in %v", len(routes), len(reqs), okCount.Load(), time.Since(start).Round(time.Millisecond))
	for _, sl := range slow {
		t.Errorf("slow: %s", sl)
	}
	// One line per route and kind of failure, with the variants that hit it.
	type key struct {
		method, path string
		status       int
		errc         string
	}
	groups := map[key][]hostileFailure{}
	var keys []key
	for _, f := range failures {
		k := key{f.req.route.Method, f.req.route.Path, f.status, f.errc}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], f)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].path+keys[i].method < keys[j].path+keys[j].method
	})
	for _, k := range keys {
		fs := groups[k]
		var whats []string
		for _, f := range fs {
			whats = append(whats, f.req.what)
		}
		sort.Strings(whats)
		t.Errorf("%s %s → %d %s (%d×: %s)\n    e.g. %s: %s", k.method, k.path, k.status, k.errc, len(fs),
			strings.Join(whats, ", "), hostileSnippet([]byte(fs[0].req.path)), fs[0].detail)
	}

	// The server survived: it answers, a sync works, and nothing panicked.
	s.do(t, "GET", "/health", "", nil).expect(t, 200)
	s.do(t, "GET", v3+"/sync?timeout=0", b.token, nil).expect(t, 200)
	s.do(t, "GET", "/_synapse/admin/v1/event_reports", b.adminToken, nil).expect(t, 200)
	if ok := okCount.Load(); ok < int64(len(routes)) {
		t.Errorf("only %d requests succeeded: the baselines do not reach the handlers", ok)
	}
	s.mu.Lock()
	logs := s.logs.String()
	s.mu.Unlock()
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(strings.ToLower(line), "panic") {
			t.Errorf("server log: %s", hostileSnippet([]byte(line)))
		}
	}
}

func hostileDo(client *http.Client, base string, r hostileReq, token string) (int, []byte, error) {
	var rd io.Reader
	if r.body != nil {
		rd = bytes.NewReader(r.body)
	}
	req, err := http.NewRequest(r.route.Method, base+r.path, rd)
	if err != nil {
		return 0, nil, err
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, raw, err
}

func hostileSnippet(b []byte) string {
	s := string(b)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
