package sytest

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

type ackedSend struct {
	txn, body string
	eventID   id.EventID
}

// TestCrashSafety: messages are sent while the server is killed with
// SIGKILL. After a restart every acknowledged event is there, every event a
// client was shown is there, a retried transaction gives the same event
// exactly once, and sync tokens from before the crash still work without
// losing anything after them.
func TestCrashSafety(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}, Name: "Before"})
		join(t, bob, room.String())
		for i := 0; i < 5; i++ {
			sendText(t, alice, room, fmt.Sprintf("early %d", i))
		}
		_, oldSince := syncNow(t, bob, "")
		if _, err := alice.SendStateEvent(ctx, room, event.StateRoomName, "", map[string]any{"name": "Acked name"}); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetAccountData(ctx, "com.example.crash", map[string]any{"kept": true}); err != nil {
			t.Fatal(err)
		}

		// Bob long-polls and remembers everything he is shown and the last token.
		var mu sync.Mutex
		shown := map[id.EventID]bool{}
		lastSince := oldSince
		syncCtx, stopSync := context.WithCancel(ctx)
		syncDone := make(chan struct{})
		go func() {
			defer close(syncDone)
			since := oldSince
			for syncCtx.Err() == nil {
				resp, err := bob.FullSyncRequest(syncCtx, mautrix.ReqSync{Since: since, Timeout: 5000})
				if err != nil {
					return // the server went away
				}
				mu.Lock()
				for _, ev := range joinedTimeline(resp, room) {
					shown[ev.ID] = true
				}
				lastSince = resp.NextBatch
				mu.Unlock()
				since = resp.NextBatch
			}
		}()

		// Alice sends as fast as she can until the server dies.
		var acked []ackedSend
		inflight := ackedSend{}
		sendDone := make(chan struct{})
		go func() {
			defer close(sendDone)
			for i := 0; ; i++ {
				a := ackedSend{txn: fmt.Sprintf("crash-txn-%d", i), body: fmt.Sprintf("crash %d", i)}
				resp, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": a.body}, mautrix.ReqSendEvent{TransactionID: a.txn})
				mu.Lock()
				if err != nil {
					inflight = a
					mu.Unlock()
					return
				}
				a.eventID = resp.EventID
				acked = append(acked, a)
				mu.Unlock()
			}
		}()
		eventually(t, "30 acknowledged sends", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(acked) >= 30
		})
		s.kill()
		<-sendDone
		stopSync()
		<-syncDone
		mu.Lock()
		preCrashSince := lastSince
		nAcked := len(acked)
		mu.Unlock()
		t.Logf("%d sends acknowledged before the kill; in flight: %q; bob was shown %d events", nAcked, inflight.txn, len(shown))

		s.start()

		// Every acknowledged event, and every event bob was shown, is stored.
		msgs := allMessages(t, alice, room)
		stored := map[id.EventID]*event.Event{}
		count := map[string]int{}
		for _, ev := range msgs {
			stored[ev.ID] = ev
			if b, ok := ev.Content.Raw["body"].(string); ok {
				count[b]++
			}
		}
		for _, a := range acked {
			ev := stored[a.eventID]
			if ev == nil {
				t.Errorf("acknowledged %s (%s) is lost after the crash", a.eventID, a.body)
				continue
			}
			if ev.Content.Raw["body"] != a.body {
				t.Errorf("%s has body %v, want %q", a.eventID, ev.Content.Raw["body"], a.body)
			}
			if count[a.body] != 1 {
				t.Errorf("%q is stored %d times", a.body, count[a.body])
			}
		}
		for eid := range shown {
			if stored[eid] == nil {
				t.Errorf("event %s was shown to bob before the crash but is gone after it", eid)
			}
		}
		if got := s.stateOf(t, alice, room, "m.room.name", "")["name"]; got != "Acked name" {
			t.Errorf("acknowledged room name after the crash: %v", got)
		}
		var ad map[string]any
		if err := alice.GetAccountData(ctx, "com.example.crash", &ad); err != nil || ad["kept"] != true {
			t.Errorf("acknowledged account data after the crash: %v %v", ad, err)
		}

		// The last acknowledged txnId still maps to its event.
		last := acked[nAcked-1]
		again, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": last.body}, mautrix.ReqSendEvent{TransactionID: last.txn})
		if err != nil || again.EventID != last.eventID {
			t.Errorf("retry of the last acknowledged txn %s: %v %v, want %s", last.txn, again, err, last.eventID)
		}
		// The send that was in flight at the crash, retried as a client would,
		// is stored exactly once whether or not it had committed.
		var inflightID id.EventID
		if inflight.txn != "" {
			resp, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": inflight.body}, mautrix.ReqSendEvent{TransactionID: inflight.txn})
			if err != nil {
				t.Fatalf("retry of the in-flight txn: %v", err)
			}
			inflightID = resp.EventID
			n := 0
			for _, ev := range allMessages(t, alice, room) {
				if ev.Content.Raw["body"] == inflight.body {
					n++
					if ev.ID != inflightID {
						t.Errorf("the in-flight message is stored as %s but the retry answered %s", ev.ID, inflightID)
					}
				}
			}
			if n != 1 {
				t.Errorf("the in-flight message is stored %d times after its retry", n)
			}
		}

		// Sync tokens from before the crash still work and lose nothing.
		after := sendText(t, alice, room, "after the crash")
		for name, since := range map[string]string{"old token": oldSince, "last pre-crash token": preCrashSince} {
			seen := map[id.EventID]bool{}
			q := `{"room":{"timeline":{"limit":100}}}`
			resp, _ := s.rawSync(t, bob, url.Values{"since": {since}, "filter": {q}, "timeout": {"0"}})
			cur := resp.NextBatch
			for _, ev := range joinedTimeline(resp, room) {
				seen[ev.ID] = true
			}
			for !seen[after] {
				var err error
				resp, err = bob.FullSyncRequest(ctx, mautrix.ReqSync{Since: cur, Timeout: 2000})
				if err != nil {
					t.Fatalf("%s: sync: %v", name, err)
				}
				for _, ev := range joinedTimeline(resp, room) {
					seen[ev.ID] = true
				}
				if resp.NextBatch == cur && len(resp.Rooms.Join) == 0 {
					break
				}
				cur = resp.NextBatch
			}
			if !seen[after] {
				t.Errorf("%s: the message sent after the restart never arrived", name)
			}
			if name == "old token" {
				for _, a := range acked {
					if !seen[a.eventID] {
						t.Errorf("%s: acknowledged %s (%s) missing from the sync after the token", name, a.eventID, a.body)
					}
				}
				if inflightID != "" && !seen[inflightID] {
					t.Errorf("%s: the retried in-flight message is missing", name)
				}
			}
		}
		// The long-poll works after the restart too.
		bs := startSyncer(t, bob)
		bs.waitFor(t, "the first sync", func(r *mautrix.RespSync) bool { return true })
		sendText(t, alice, room, "live again")
		bs.waitFor(t, "a live message after the restart", func(r *mautrix.RespSync) bool { return timelineHas(r, room, "live again") })
	})
}

// TestCrashSafetyReceiptsAndState: receipts and membership acknowledged before
// a SIGKILL are there after it, and a since token from before the crash
// still gets later receipts.
func TestCrashSafetyReceiptsAndState(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		m1 := sendText(t, alice, room, "read me")
		if err := bob.SendReceipt(ctx, room, m1, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		join(t, carol, room.String())
		if _, err := alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: carol.UserID}); err != nil {
			t.Fatal(err)
		}
		_, since := syncNow(t, alice, "")
		s.kill()
		s.start()

		if m := s.stateOf(t, alice, room, "m.room.member", carol.UserID.String()); m["membership"] != "ban" {
			t.Errorf("ban after the crash: %v", m)
		}
		r, _ := syncNow(t, alice, "")
		if !receiptFrom(r, room, m1, "m.read", bob.UserID) {
			t.Errorf("bob's receipt is lost after the crash")
		}
		m2 := sendText(t, alice, room, "read me too")
		if err := bob.SendReceipt(ctx, room, m2, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, alice, since, "bob's new receipt through a pre-crash token", func(r *mautrix.RespSync) bool {
			return receiptFrom(r, room, m2, "m.read", bob.UserID)
		})
		if jm := must1(alice.JoinedMembers(ctx, room))(t); len(jm.Joined) != 2 {
			t.Errorf("joined members after the crash: %v", jm.Joined)
		}
		_, err := carol.JoinRoom(ctx, room.String(), nil)
		mustErr(t, "a banned user joins after the crash", err, 403, "M_FORBIDDEN")
	})
}

// TestCrashSafetyConcurrent: several users send into several rooms at once
// while the server is killed; every acknowledged event survives, and a
// client that long-polled through it all, then resumes from its last token,
// has seen every acknowledged event exactly once (no gap, no repeat).
func TestCrashSafetyConcurrent(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		watcher := s.register(t, "watcher")
		var senders []*mautrix.Client
		for i := 0; i < 4; i++ {
			senders = append(senders, s.register(t, fmt.Sprintf("sender%d", i)))
		}
		rooms := []id.RoomID{
			createRoom(t, watcher, &mautrix.ReqCreateRoom{Preset: "public_chat"}),
			createRoom(t, watcher, &mautrix.ReqCreateRoom{Preset: "public_chat"}),
		}
		for _, c := range senders {
			for _, r := range rooms {
				join(t, c, r.String())
			}
		}
		_, since := syncNow(t, watcher, "")

		var mu sync.Mutex
		seen := map[id.EventID]int{}
		lastSince := since
		record := func(resp *mautrix.RespSync) {
			for _, r := range rooms {
				if jr := resp.Rooms.Join[r]; jr != nil {
					if jr.Timeline.Limited {
						t.Errorf("a live sync of %s was limited; events would be skipped", r)
					}
					for _, ev := range jr.Timeline.Events {
						if ev.Type.Type == "m.room.message" {
							seen[ev.ID]++
						}
					}
				}
			}
		}
		syncCtx, stopSync := context.WithCancel(ctx)
		syncDone := make(chan struct{})
		go func() {
			defer close(syncDone)
			cur := since
			for syncCtx.Err() == nil {
				// A large timeline limit so a burst is never cut.
				resp, _ := fetchSync(syncCtx, s, watcher, cur, `{"room":{"timeline":{"limit":1000}}}`, 5000)
				if resp == nil {
					return
				}
				mu.Lock()
				record(resp)
				lastSince = resp.NextBatch
				mu.Unlock()
				cur = resp.NextBatch
			}
		}()

		var acked []ackedSend
		var wg sync.WaitGroup
		for i, c := range senders {
			wg.Add(1)
			go func(i int, c *mautrix.Client) {
				defer wg.Done()
				for n := 0; ; n++ {
					room := rooms[(i+n)%len(rooms)]
					a := ackedSend{txn: fmt.Sprintf("c%d-%d", i, n), body: fmt.Sprintf("sender %d message %d", i, n)}
					resp, err := c.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": a.body}, mautrix.ReqSendEvent{TransactionID: a.txn})
					if err != nil {
						return
					}
					a.eventID = resp.EventID
					mu.Lock()
					acked = append(acked, a)
					mu.Unlock()
				}
			}(i, c)
		}
		eventually(t, "80 acknowledged sends", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(acked) >= 80
		})
		s.kill()
		wg.Wait()
		stopSync()
		<-syncDone
		s.start()

		mu.Lock()
		cur := lastSince
		mu.Unlock()
		// Resume from the last token until quiet.
		for i := 0; i < 20; i++ {
			resp, err := fetchSync(ctx, s, watcher, cur, `{"room":{"timeline":{"limit":1000}}}`, 500)
			if resp == nil {
				t.Fatalf("sync after the restart: %v", err)
			}
			mu.Lock()
			record(resp)
			mu.Unlock()
			if resp.NextBatch == cur {
				break
			}
			cur = resp.NextBatch
		}
		stored := map[id.EventID]bool{}
		for _, r := range rooms {
			for _, ev := range allMessages(t, watcher, r) {
				stored[ev.ID] = true
			}
		}
		lost, missed := 0, 0
		for _, a := range acked {
			if !stored[a.eventID] {
				lost++
				t.Errorf("acknowledged %s (%s) lost", a.eventID, a.body)
			}
			if seen[a.eventID] == 0 {
				missed++
				if missed <= 5 {
					t.Errorf("the watcher's sync stream skipped %s (%s)", a.eventID, a.body)
				}
			}
		}
		for eid, n := range seen {
			if n > 1 {
				t.Errorf("the watcher's sync stream delivered %s %d times", eid, n)
			}
			if !stored[eid] {
				t.Errorf("the watcher was shown %s, which is gone after the crash", eid)
			}
		}
		t.Logf("%d acknowledged, %d lost, %d skipped by sync", len(acked), lost, missed)
	})
}

// fetchSync runs one /sync with an inline filter; nil on any failure.
func fetchSync(ctx context.Context, s *server, cli *mautrix.Client, since, filter string, timeout int) (*mautrix.RespSync, error) {
	q := url.Values{"timeout": {fmt.Sprint(timeout)}, "filter": {filter}}
	if since != "" {
		q.Set("since", since)
	}
	var resp mautrix.RespSync
	_, err := cli.MakeFullRequest(ctx, mautrix.FullRequest{Method: "GET", URL: s.URL + v3 + "/sync?" + q.Encode(), ResponseJSON: &resp})
	if err != nil {
		return nil, err
	}
	return &resp, nil
}
