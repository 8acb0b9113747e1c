package federationapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/federationapi/keys"
	"github.com/haven-chat/haven/federationapi/origin"
	"github.com/haven-chat/haven/internal/bus"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
)

const (
	localName  = "local.test"
	remoteName = "remote.test"
	// otherName is a third server whose keys are served too: its users'
	// events are well signed, but by another server than the origin.
	otherName = "other.test"
	// originHeader sets the origin of a request on the routes mounted
	// without request signatures.
	originHeader = "X-Test-Origin"
)

// users is the user API as the handlers and the roomserver see it: a
// fixed set of local accounts.
type users struct{ known map[string]bool }

func (u users) AccountExists(_ context.Context, userID string) (bool, error) {
	return u.known[userID], nil
}

func (users) IsGuest(context.Context, string) (bool, error) { return false, nil }

func (u users) Profile(_ context.Context, userID string) (string, string, error) {
	if userID == "@bob:"+localName {
		return "Bob", "mxc://local.test/bob", nil
	}
	return "", "", nil
}

func (users) OpenIDUser(_ context.Context, token string) (string, error) {
	if token == "good" {
		return "@bob:" + localName, nil
	}
	return "", merr.UnknownToken(false, "Unknown OpenID token")
}

// ephemeral records the EDUs handed over.
type ephemeral struct {
	mu       sync.Mutex
	typing   []string // user|room|typing
	receipts []string // user|room|last event
	// presence: user|presence|status|last_active_ago|currently_active
	presence      []string
	typingTimeout time.Duration
	// threads: the thread IDs of the receipts
	threads []string
}

func (e *ephemeral) SetTyping(_ context.Context, userID, roomID string, typing bool, timeout time.Duration) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.typing = append(e.typing, fmt.Sprintf("%s|%s|%v", userID, roomID, typing))
	e.typingTimeout = timeout
	return nil
}

func (e *ephemeral) SetRemoteReceipt(_ context.Context, userID, roomID string, eventIDs []string, threadID string, _ int64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.receipts = append(e.receipts, userID+"|"+roomID+"|"+eventIDs[len(eventIDs)-1])
	e.threads = append(e.threads, threadID)
	return nil
}

func (e *ephemeral) SetRemotePresence(_ context.Context, userID, presence, statusMsg string, lastActiveAgo int64, currentlyActive bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.presence = append(e.presence, fmt.Sprintf("%s|%s|%s|%d|%v", userID, presence, statusMsg, lastActiveAgo, currentlyActive))
	return nil
}

func (e *ephemeral) seen() (typing, receipts []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.typing...), append([]string(nil), e.receipts...)
}

// keyFetcher fetches servers' keys over HTTP from their key servers.
type keyFetcher struct{ urls map[string]string }

func (f keyFetcher) ServerKeys(ctx context.Context, server string) (gomatrixserverlib.ServerKeys, error) {
	u, ok := f.urls[server]
	if !ok {
		return gomatrixserverlib.ServerKeys{}, errors.New("no such server")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/_matrix/key/v2/server", nil)
	if err != nil {
		return gomatrixserverlib.ServerKeys{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return gomatrixserverlib.ServerKeys{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return gomatrixserverlib.ServerKeys{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return gomatrixserverlib.ServerKeys{}, fmt.Errorf("status %d", resp.StatusCode)
	}
	var k gomatrixserverlib.ServerKeys
	return k, k.UnmarshalJSON(body)
}

// randomID makes the key IDs of each env its own: the key store keeps
// what it fetched in the database, which two envs may share.
func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newKey(t testing.TB, id string) serverkey.Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return serverkey.Key{ID: gomatrixserverlib.KeyID(id), Private: priv}
}

// keyServer serves a server's keys on loopback and returns its URL.
func keyServer(t testing.TB, name string, key serverkey.Key) string {
	t.Helper()
	srv := keys.NewServer(keys.ServerConfig{Self: keys.Identity{ServerName: name, Key: key}})
	r := chi.NewRouter()
	srv.Routes(r)
	hs := httptest.NewServer(r)
	t.Cleanup(hs.Close)
	return hs.URL
}

// env is this server (local.test: a real roomserver on a real database,
// the inbound endpoints on loopback) and the keys of two other servers.
type env struct {
	t        testing.TB
	ctx      context.Context
	db       *storage.DB
	rs       *roomserver.Service
	api      *API
	eph      *ephemeral
	url      string // routes without request signatures (origin by header)
	plain    http.Handler
	authURL  string // routes behind keys.Authenticate
	remote   serverkey.Key
	other    serverkey.Key
	verifier *keys.Store
}

func newEnv(t testing.TB, db *storage.DB) *env {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Start(ctx, bus.Options{StoreDir: t.TempDir(), Namespace: "fedtest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	key, err := serverkey.Load(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	u := users{known: map[string]bool{"@alice:" + localName: true, "@bob:" + localName: true}}
	rs, err := roomserver.New(ctx, db, b, u, u, roomserver.Options{ServerName: localName, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Close)
	e := &env{t: t, ctx: ctx, db: db, rs: rs, eph: &ephemeral{},
		remote: newKey(t, "ed25519:r"+randomID()), other: newKey(t, "ed25519:o"+randomID())}
	fetcher := keyFetcher{urls: map[string]string{
		remoteName: keyServer(t, remoteName, e.remote),
		otherName:  keyServer(t, otherName, e.other),
	}}
	e.verifier = keys.NewStore(db, keys.StoreConfig{Self: keys.Identity{ServerName: localName, Key: key}, Fetcher: fetcher})
	log := logrus.New()
	log.SetOutput(io.Discard)
	e.api = &API{ServerName: localName, Key: key, Rooms: rs, Users: u, Ephemeral: e.eph, Verifier: e.verifier, Log: log}

	plain := chi.NewRouter()
	plain.Route("/_matrix/federation", func(r chi.Router) {
		r.Use(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				from := r.Header.Get(originHeader)
				if from == "" {
					from = remoteName
				}
				next.ServeHTTP(w, r.WithContext(origin.With(r.Context(), from)))
			})
		})
		e.api.Routes(r)
	})
	e.plain = plain
	hs := httptest.NewServer(plain)
	t.Cleanup(hs.Close)
	e.url = hs.URL

	authed := chi.NewRouter()
	authed.Route("/_matrix/federation", func(r chi.Router) {
		e.api.PublicRoutes(r)
		r.Group(func(r chi.Router) {
			r.Use(keys.Authenticate(e.verifier, localName, func(s string) bool { return s != "denied.test" }))
			e.api.Routes(r)
		})
	})
	hs2 := httptest.NewServer(authed)
	t.Cleanup(hs2.Close)
	e.authURL = hs2.URL
	return e
}

// reply is an answer of the server.
type reply struct {
	status int
	body   []byte
}

func (r reply) errcode() string {
	var b struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(r.body, &b)
	return b.Errcode
}

func (r reply) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer %d %s: %v", r.status, r.body, err)
	}
}

// do sends a request as from (on the routes without signatures). body is
// sent as it is when it is []byte or string, as JSON otherwise.
func (e *env) do(method, path, from string, body any) reply {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(e.ctx, method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set(originHeader, from)
	return e.roundTrip(req)
}

func (e *env) roundTrip(req *http.Request) reply {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, body: b}
}

// doSigned sends a request signed by server with key through
// keys.Authenticate.
func (e *env) doSigned(method, path, server string, key serverkey.Key, body any) reply {
	e.t.Helper()
	fr := fclient.NewFederationRequest(method, spec.ServerName(server), localName, path)
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := fr.Sign(spec.ServerName(server), key.ID, key.Private); err != nil {
		e.t.Fatal(err)
	}
	hr, err := fr.HTTPRequest()
	if err != nil {
		e.t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(e.ctx, method, e.authURL+path, hr.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header = hr.Header
	return e.roundTrip(req)
}

// wantErr checks an error answer's status and errcode.
func wantErr(t testing.TB, r reply, status int, errcode string) {
	t.Helper()
	if r.status != status || r.errcode() != errcode {
		t.Fatalf("got %d %s, want %d %s", r.status, r.body, status, errcode)
	}
}

func wantOK(t testing.TB, r reply) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("got %d %s, want 200", r.status, r.body)
	}
}

// publicRoom makes a public room of alice@local.test of a room version.
func (e *env) publicRoom(ver string) string {
	e.t.Helper()
	res, err := e.rs.CreateRoom(e.ctx, "@alice:"+localName, roomserver.CreateRoomRequest{Preset: "public_chat", RoomVersion: ver})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.RoomID
}

func (e *env) verImpl(roomID string) gomatrixserverlib.IRoomVersion {
	e.t.Helper()
	ver, err := e.rs.RoomVersion(e.ctx, roomID)
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(ver))
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// currentState is the room's current state as PDUs.
func (e *env) currentState(roomID string) []gomatrixserverlib.PDU {
	e.t.Helper()
	evs, err := e.rs.CurrentState(e.ctx, roomID)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.pdus(roomID, eventIDs(evs))
}

func eventIDs(evs []roomserver.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.EventID
	}
	return out
}

func (e *env) pdus(roomID string, ids []string) []gomatrixserverlib.PDU {
	e.t.Helper()
	fed, err := e.rs.FederationEvents(e.ctx, roomID, ids)
	if err != nil {
		e.t.Fatal(err)
	}
	v := e.verImpl(roomID)
	out := make([]gomatrixserverlib.PDU, 0, len(fed))
	for _, f := range fed {
		p, err := v.NewEventFromTrustedJSON(f.JSON, false)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// build makes an event of sender on the room's forward extremities and
// current state, signed by server with key (which need not be the
// sender's server).
func (e *env) build(roomID, sender, typ string, stateKey *string, content string, server string, key serverkey.Key) gomatrixserverlib.PDU {
	e.t.Helper()
	prevs, err := e.rs.Extremities(e.ctx, roomID)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.buildOn(roomID, prevs, e.currentState(roomID), sender, typ, stateKey, content, server, key)
}

// buildAfter makes an event on one earlier event of the room, with its
// auth events from the state after it.
func (e *env) buildAfter(roomID, prev, sender, typ string, stateKey *string, content string, server string, key serverkey.Key) gomatrixserverlib.PDU {
	e.t.Helper()
	ev, err := e.rs.GetEvent(e.ctx, prev)
	if err != nil {
		e.t.Fatal(err)
	}
	after, err := e.rs.StateIDsAfter(e.ctx, ev)
	if err != nil {
		e.t.Fatal(err)
	}
	var ids []string
	for _, id := range after {
		ids = append(ids, id)
	}
	return e.buildOn(roomID, []string{prev}, e.pdus(roomID, ids), sender, typ, stateKey, content, server, key)
}

func (e *env) buildOn(roomID string, prevs []string, state []gomatrixserverlib.PDU, sender, typ string, stateKey *string, content string, server string, key serverkey.Key) gomatrixserverlib.PDU {
	e.t.Helper()
	var depth int64
	for _, id := range prevs {
		ev, err := e.rs.GetEvent(e.ctx, id)
		if err != nil {
			e.t.Fatal(err)
		}
		depth = max(depth, ev.Depth)
	}
	auth, err := gomatrixserverlib.NewAuthEvents(state)
	if err != nil {
		e.t.Fatal(err)
	}
	proto := &gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey,
		Content: spec.RawJSON(content), PrevEvents: prevs, Depth: depth + 1}
	b := e.verImpl(roomID).NewEventBuilderFromProtoEvent(proto)
	if err := b.AddAuthEvents(auth); err != nil {
		e.t.Fatal(err)
	}
	pdu, err := b.Build(time.Now(), spec.ServerName(server), key.ID, key.Private)
	if err != nil {
		e.t.Fatal(err)
	}
	return pdu
}

// fromTemplate fills in a make_* template and signs it as server.
func (e *env) fromTemplate(r reply, server string, key serverkey.Key) gomatrixserverlib.PDU {
	e.t.Helper()
	wantOK(e.t, r)
	var tmpl struct {
		Event       gomatrixserverlib.ProtoEvent `json:"event"`
		RoomVersion string                       `json:"room_version"`
	}
	r.decode(e.t, &tmpl)
	v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(tmpl.RoomVersion))
	if err != nil {
		e.t.Fatal(err)
	}
	pdu, err := v.NewEventBuilderFromProtoEvent(&tmpl.Event).Build(time.Now(), spec.ServerName(server), key.ID, key.Private)
	if err != nil {
		e.t.Fatal(err)
	}
	return pdu
}

// joinRemote joins a user of remote.test to the room through make_join
// and send_join.
func (e *env) joinRemote(roomID, userID string) gomatrixserverlib.PDU {
	e.t.Helper()
	ver, _ := e.rs.RoomVersion(e.ctx, roomID)
	join := e.fromTemplate(e.do("GET", "/_matrix/federation/v1/make_join/"+roomID+"/"+userID+"?ver="+ver, remoteName, nil), remoteName, e.remote)
	wantOK(e.t, e.do("PUT", "/_matrix/federation/v2/send_join/"+roomID+"/"+join.EventID(), remoteName, join.JSON()))
	return join
}

func (e *env) membership(roomID, userID string) string {
	e.t.Helper()
	m, _, err := e.rs.Membership(e.ctx, roomID, userID)
	if err != nil && !merr.Is(err, "M_NOT_FOUND") {
		e.t.Fatal(err)
	}
	return m
}

// stored tells whether an event is in the room's timeline.
func (e *env) stored(id string) bool {
	e.t.Helper()
	evs, err := roomserver.EventsByID(e.ctx, e.db, []string{id})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(evs) == 1
}

// txn is a /send body.
func txn(pdus []json.RawMessage, edus ...map[string]any) map[string]any {
	if pdus == nil {
		pdus = []json.RawMessage{}
	}
	if edus == nil {
		edus = []map[string]any{}
	}
	return map[string]any{"origin": remoteName, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus, "edus": edus}
}

// pduResults reads a /send answer.
func pduResults(t testing.TB, r reply) map[string]pduResult {
	t.Helper()
	wantOK(t, r)
	var out struct {
		PDUs map[string]pduResult `json:"pdus"`
	}
	r.decode(t, &out)
	return out.PDUs
}

func strp(s string) *string { return &s }
