package federationapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/syncapi"
)

// TestEphemeralEDUs: typing, receipts and presence of the origin's users
// are handed over, each malformed or foreign entry dropped on its own
// (the rest of the EDU taken), private receipts never; nothing panics and
// the transaction is answered 200.
func TestEphemeralEDUs(t *testing.T) {
	e := newEnv(t, storagetest.Open(t, storage.SQLite))
	roomID := e.publicRoom("10")
	e.joinRemote(roomID, rita)
	ron := "@ron:" + remoteName
	edu := func(typ string, content any) map[string]any {
		return map[string]any{"edu_type": typ, "content": content}
	}
	receipt := func(evs any, data any) any { return map[string]any{"event_ids": evs, "data": data} }
	wantOK(t, e.do("PUT", sendPath("eph1"), remoteName, txn(nil,
		edu("m.typing", map[string]any{"room_id": roomID, "user_id": rita, "typing": true}),
		edu("m.typing", map[string]any{"room_id": roomID, "user_id": rita, "typing": "yes"}),
		edu("m.typing", map[string]any{"user_id": rita, "typing": true}),
		edu("m.typing", []int{1}),
		edu("m.receipt", map[string]any{roomID: map[string]any{
			"m.read": map[string]any{
				rita:               receipt([]string{"$a", "$b"}, map[string]any{"ts": 5, "thread_id": "$root"}),
				ron:                receipt([]string{"$c"}, map[string]any{"ts": 6}),
				eve:                receipt([]string{"$d"}, map[string]any{"ts": 7}),
				"@x:" + remoteName: receipt("$e", nil),
				"@y:" + remoteName: receipt([]string{"$f"}, map[string]any{"thread_id": 9}),
				"@z:" + remoteName: 5,
				"@w:" + remoteName: receipt([]string{}, nil),
			},
			"m.read.private": map[string]any{rita: receipt([]string{"$p"}, map[string]any{"ts": 1})},
			"m.fully_read":   map[string]any{rita: receipt([]string{"$q"}, map[string]any{"ts": 1})},
		}, "!other:remote.test": "junk"}),
		edu("m.receipt", "junk"),
		edu("m.receipt", map[string]any{roomID: map[string]any{"m.read": []int{1}}}),
		edu("m.presence", map[string]any{"push": []any{
			map[string]any{"user_id": rita, "presence": "online", "last_active_ago": 1200, "currently_active": true, "status_msg": "here"},
			map[string]any{"user_id": eve, "presence": "online", "last_active_ago": 0},
			map[string]any{"user_id": ron, "presence": 5},
			"junk",
			map[string]any{"user_id": ron, "presence": "unavailable", "last_active_ago": 99},
		}}),
		edu("m.presence", map[string]any{"push": "junk"}),
		edu("m.presence", nil),
	)))
	e.eph.mu.Lock()
	defer e.eph.mu.Unlock()
	if want := []string{rita + "|" + roomID + "|true"}; !slices.Equal(e.eph.typing, want) {
		t.Errorf("typing %v, want %v", e.eph.typing, want)
	}
	if e.eph.typingTimeout != remoteTypingTimeout {
		t.Errorf("remote typing timeout %v", e.eph.typingTimeout)
	}
	got := slices.Clone(e.eph.receipts)
	slices.Sort(got)
	if want := []string{rita + "|" + roomID + "|$b", ron + "|" + roomID + "|$c"}; !slices.Equal(got, want) {
		t.Errorf("receipts %v, want %v", got, want)
	}
	if !slices.Contains(e.eph.threads, "$root") {
		t.Errorf("threads %v: the threaded receipt lost its thread", e.eph.threads)
	}
	if want := []string{rita + "|online|here|1200|true", ron + "|unavailable||99|false"}; !slices.Equal(e.eph.presence, want) {
		t.Errorf("presence %v, want %v", e.eph.presence, want)
	}
}

// blockingEph holds the first typing notice until released, so that a
// test can send the same transaction again while the first is processed.
type blockingEph struct {
	*ephemeral
	entered chan struct{}
	release chan struct{}
	calls   atomic.Int64
}

func (b *blockingEph) SetTyping(ctx context.Context, userID, roomID string, typing bool, timeout time.Duration) error {
	if b.calls.Add(1) == 1 {
		close(b.entered)
		<-b.release
	}
	return b.ephemeral.SetTyping(ctx, userID, roomID, typing, timeout)
}

// TestConcurrentDuplicateSend: the same transaction (origin and ID) sent
// again while the first request processes it is processed once: the
// second request waits and gets the first one's answer. A first request
// whose sender went away leaves the transaction to the next one.
func TestConcurrentDuplicateSend(t *testing.T) {
	e := newEnv(t, storagetest.Open(t, storage.SQLite))
	roomID := e.publicRoom("10")
	e.joinRemote(roomID, rita)
	be := &blockingEph{ephemeral: e.eph, entered: make(chan struct{}), release: make(chan struct{})}
	e.api.Ephemeral = be
	m := e.build(roomID, rita, "m.room.message", nil, message("once"), remoteName, e.remote)
	body := txn([]json.RawMessage{m.JSON()}, map[string]any{"edu_type": "m.typing",
		"content": map[string]any{"room_id": roomID, "user_id": rita, "typing": true}})

	var wg sync.WaitGroup
	answers := make([]reply, 3)
	wg.Add(1)
	go func() { defer wg.Done(); answers[0] = e.do("PUT", sendPath("dup"), remoteName, body) }()
	<-be.entered
	for i := 1; i < 3; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); answers[i] = e.do("PUT", sendPath("dup"), remoteName, body) }()
	}
	key := remoteName + "\x00dup"
	waitFor(t, "two requests waiting", func() bool { return e.api.flights.waiting(key) == 2 })
	close(be.release)
	wg.Wait()
	for i, a := range answers {
		if res := pduResults(t, a); res[m.EventID()].Error != "" || string(a.body) != string(answers[0].body) {
			t.Fatalf("answer %d: %s (first %s)", i, a.body, answers[0].body)
		}
	}
	if n := be.calls.Load(); n != 1 {
		t.Fatalf("the transaction's EDU was processed %d times", n)
	}
	// Later: answered from memory, not processed.
	wantOK(t, e.do("PUT", sendPath("dup"), remoteName, body))
	if n := be.calls.Load(); n != 1 {
		t.Fatalf("a repeated transaction was processed again (%d)", n)
	}

	// A first request whose sender gives up while it is processed: the
	// waiting one processes the transaction itself.
	be2 := &blockingEph{ephemeral: e.eph, entered: make(chan struct{}), release: make(chan struct{})}
	e.api.Ephemeral = be2
	ctx, cancel := context.WithCancel(e.ctx)
	req := httptest.NewRequestWithContext(ctx, http.MethodPut, sendPath("gone"), strings.NewReader(mustJSON(t, body)))
	req.Header.Set(originHeader, remoteName)
	done := make(chan int)
	go func() {
		w := httptest.NewRecorder()
		e.plain.ServeHTTP(w, req)
		done <- w.Code
	}()
	<-be2.entered
	second := make(chan reply)
	go func() { second <- e.do("PUT", sendPath("gone"), remoteName, body) }()
	waitFor(t, "the retry waiting", func() bool { return e.api.flights.waiting(remoteName+"\x00gone") == 1 })
	cancel()
	close(be2.release)
	<-done
	wantOK(t, <-second)
	if n := be2.calls.Load(); n != 2 {
		t.Fatalf("after an interrupted first attempt the EDU was processed %d times, want 2", n)
	}
}

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// fakeQueue records the EDUs queued, by destination.
type fakeQueue struct {
	mu   sync.Mutex
	edus []string // dest|type|content
}

func (q *fakeQueue) QueueEDU(_ context.Context, dests []string, edu gomatrixserverlib.EDU) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, d := range dests {
		q.edus = append(q.edus, d+"|"+edu.Type+"|"+string(edu.Content))
	}
	return nil
}

func (q *fakeQueue) take() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.edus
	q.edus = nil
	return out
}

type fakeRooms map[string][]string

func (r fakeRooms) JoinedServers(_ context.Context, roomID string) ([]string, error) {
	return r[roomID], nil
}

type fakePresence struct {
	sharing  map[string][]string
	presence map[string]syncapi.PresenceNotice
	members  map[string][]string
}

func (p fakePresence) ServersSharingRoom(u string) []string { return p.sharing[u] }
func (p fakePresence) CurrentPresence(u string) (syncapi.PresenceNotice, bool) {
	e, ok := p.presence[u]
	return e, ok
}
func (p fakePresence) MembersOf(room string) []string { return p.members[room] }

func notice(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestForwarderTyping: a start goes out once (renewals within
// typingRefresh are not repeated), again after typingRefresh while the
// user types, and the stop goes out when the user stops or their timeout
// passes; other servers' users and rooms without other servers send
// nothing.
func TestForwarderTyping(t *testing.T) {
	q := &fakeQueue{}
	f := &EDUForwarder{ServerName: localName, Rooms: fakeRooms{"!r:local.test": {localName, remoteName}}, Queue: q, Log: quietLog()}
	ctx := context.Background()
	t0 := time.Now()
	typing := func(user string, on bool, expires time.Time, at time.Time) {
		f.typing(ctx, notice(t, syncapi.TypingNotice{RoomID: "!r:local.test", UserID: user, Typing: on, ExpiresMS: expires.UnixMilli()}), at)
	}
	start := remoteName + `|m.typing|{"room_id":"!r:local.test","typing":true,"user_id":"@alice:local.test"}`
	stop := remoteName + `|m.typing|{"room_id":"!r:local.test","typing":false,"user_id":"@alice:local.test"}`
	typing(alice, true, t0.Add(90*time.Second), t0)
	typing(alice, true, t0.Add(95*time.Second), t0.Add(5*time.Second))
	typing(rita, true, t0.Add(30*time.Second), t0)
	if got := q.take(); !slices.Equal(got, []string{start}) {
		t.Fatalf("start: %v", got)
	}
	f.typingTick(ctx, t0.Add(10*time.Second))
	if got := q.take(); len(got) != 0 {
		t.Fatalf("tick within the refresh: %v", got)
	}
	f.typingTick(ctx, t0.Add(typingRefresh))
	if got := q.take(); !slices.Equal(got, []string{start}) {
		t.Fatalf("refresh: %v", got)
	}
	f.typingTick(ctx, t0.Add(96*time.Second))
	if got := q.take(); !slices.Equal(got, []string{stop}) {
		t.Fatalf("timeout: %v", got)
	}
	// A stop of a typing already ended sends nothing; a stop of one going on does.
	typing(alice, false, t0, t0.Add(97*time.Second))
	if got := q.take(); len(got) != 0 {
		t.Fatalf("stop after the timeout: %v", got)
	}
	typing(alice, true, t0.Add(200*time.Second), t0.Add(100*time.Second))
	typing(alice, false, t0, t0.Add(101*time.Second))
	if got := q.take(); !slices.Equal(got, []string{start, stop}) {
		t.Fatalf("start and stop: %v", got)
	}
}

// TestForwarderReceipts: public receipts go out with their thread; private
// ones and other servers' users' never.
func TestForwarderReceipts(t *testing.T) {
	q := &fakeQueue{}
	f := &EDUForwarder{ServerName: localName, Rooms: fakeRooms{"!r:local.test": {localName, remoteName, otherName}}, Queue: q, Log: quietLog()}
	ctx := context.Background()
	for _, n := range []syncapi.ReceiptNotice{
		{RoomID: "!r:local.test", UserID: alice, Type: "m.read", EventID: "$e", ThreadID: "$root", TS: 7, Pos: 1},
		{RoomID: "!r:local.test", UserID: alice, Type: "m.read.private", EventID: "$e", TS: 7, Pos: 2},
		{RoomID: "!r:local.test", UserID: rita, Type: "m.read", EventID: "$e", TS: 7, Pos: 3},
		{Pos: 4, Skip: true},
	} {
		f.receipt(ctx, notice(t, n))
	}
	content := `{"!r:local.test":{"m.read":{"@alice:local.test":{"data":{"thread_id":"$root","ts":7},"event_ids":["$e"]}}}}`
	got := q.take()
	slices.Sort(got)
	if want := []string{otherName + "|m.receipt|" + content, remoteName + "|m.receipt|" + content}; !slices.Equal(got, want) {
		t.Fatalf("receipts queued %v, want %v", got, want)
	}
}

// TestForwarderPresence: a change of one of our users goes to the servers
// sharing a room with them only; a join makes servers share a room: our
// joining user's presence goes to the room's servers, and a server's
// first user joining gets our members' presence.
func TestForwarderPresence(t *testing.T) {
	q := &fakeQueue{}
	on := true
	p := fakePresence{
		sharing: map[string][]string{alice: {localName, remoteName}, bob: {localName}},
		presence: map[string]syncapi.PresenceNotice{
			alice: {UserID: alice, Presence: "online", LastActive: time.Now().UnixMilli(), StatusMsg: "busy"},
			bob:   {UserID: bob, Presence: "unavailable", LastActive: time.Now().Add(-time.Hour).UnixMilli()},
			rita:  {UserID: rita, Presence: "online", Active: &on},
		},
		members: map[string][]string{"!r:local.test": {alice, bob, rita}, "!s:local.test": {alice, rita, "@ron:" + remoteName}},
	}
	f := &EDUForwarder{ServerName: localName, Rooms: fakeRooms{"!r:local.test": {localName, remoteName, otherName}}, Queue: q, Presence: p, Log: quietLog()}
	ctx := context.Background()
	decode := func(s string) (string, []map[string]any) {
		dest, rest, _ := strings.Cut(s, "|m.presence|")
		var c struct {
			Push []map[string]any `json:"push"`
		}
		if err := json.Unmarshal([]byte(rest), &c); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		return dest, c.Push
	}

	f.presenceChanged(ctx, notice(t, p.presence[alice]))
	f.presenceChanged(ctx, notice(t, p.presence[bob]))  // shares rooms with nobody elsewhere
	f.presenceChanged(ctx, notice(t, p.presence[rita])) // not ours
	f.presenceChanged(ctx, notice(t, syncapi.PresenceNotice{Pos: 9}))
	got := q.take()
	if len(got) != 1 {
		t.Fatalf("presence changes queued %v", got)
	}
	dest, users := decode(got[0])
	if dest != remoteName || len(users) != 1 || users[0]["user_id"] != alice || users[0]["presence"] != "online" ||
		users[0]["currently_active"] != true || users[0]["status_msg"] != "busy" || users[0]["last_active_ago"] == nil {
		t.Fatalf("alice's presence: %s", got[0])
	}

	join := func(room, user string) []byte {
		return notice(t, map[string]any{"room_id": room, "type": "m.room.member", "state_key": user, "membership": "join", "pos": 1})
	}
	// bob (ours) joins !r: his presence to its other servers.
	f.presenceOnJoin(ctx, join("!r:local.test", bob))
	got = q.take()
	slices.Sort(got)
	if len(got) != 2 || !strings.HasPrefix(got[0], otherName+"|") || !strings.HasPrefix(got[1], remoteName+"|") {
		t.Fatalf("bob's join: %v", got)
	}
	if _, users := decode(got[0]); len(users) != 1 || users[0]["user_id"] != bob || users[0]["currently_active"] != false {
		t.Fatalf("bob's join: %v", got)
	}
	// rita, the first of remote.test in !r: our members' presence to her server.
	f.presenceOnJoin(ctx, join("!r:local.test", rita))
	got = q.take()
	if len(got) != 1 {
		t.Fatalf("rita's join: %v", got)
	}
	if dest, users := decode(got[0]); dest != remoteName || len(users) != 2 {
		t.Fatalf("rita's join: %v", got)
	}
	// rita in !s, where ron of her server is already: nothing.
	f.presenceOnJoin(ctx, join("!s:local.test", rita))
	// Not joins.
	f.presenceOnJoin(ctx, notice(t, map[string]any{"room_id": "!r:local.test", "type": "m.room.member", "state_key": rita, "membership": "leave"}))
	f.presenceOnJoin(ctx, notice(t, map[string]any{"room_id": "!r:local.test", "type": "m.room.message", "content": map[string]any{"membership": "join"}}))
	f.presenceOnJoin(ctx, []byte(`{"membership":"join"`))
	if got := q.take(); len(got) != 0 {
		t.Fatalf("queued for no new sharing: %v", got)
	}
}
