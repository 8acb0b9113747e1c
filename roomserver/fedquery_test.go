package roomserver

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func pduIDs(pdus []FederationPDU) []string {
	out := make([]string, len(pdus))
	for i, p := range pdus {
		out[i] = p.EventID
	}
	return out
}

// publicRoom creates a public room of alice's that @bob:remote joins.
func publicRoom(t *testing.T, h *harness) string {
	t.Helper()
	ctx := context.Background()
	res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	return res.RoomID
}

func setHistoryVisibility(t *testing.T, h *harness, roomID, hv string) string {
	t.Helper()
	empty := ""
	id, err := h.s.Send(context.Background(), Sender{"@alice:test", "D"}, SendRequest{RoomID: roomID, Type: "m.room.history_visibility",
		StateKey: &empty, Content: json.RawMessage(`{"history_visibility":"` + hv + `"}`)})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestFederationReads(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		roomID := publicRoom(t, h)
		setHistoryVisibility(t, h, roomID, "joined")
		before := sendText(t, h, roomID, "before bob", "t1")
		if _, err := h.s.Join(ctx, "@bob:remote", roomID, ""); err != nil {
			t.Fatal(err)
		}
		bobJoin, _ := h.s.CurrentStateEvent(ctx, roomID, "m.room.member", "@bob:remote")
		after := sendText(t, h, roomID, "after bob", "t2")
		last := sendText(t, h, roomID, "last", "t3")

		// Who is in the room.
		for _, c := range []struct {
			server string
			want   bool
		}{{"remote", true}, {"test", true}, {"other", false}, {"mote", false}, {"", false}} {
			got, err := h.s.ServerInRoom(ctx, roomID, c.server)
			if err != nil || got != c.want {
				t.Errorf("ServerInRoom(%q) = %v %v, want %v", c.server, got, err, c.want)
			}
		}
		if _, err := h.s.ServerInRoom(ctx, "!nope:test", "remote"); err == nil {
			t.Error("ServerInRoom of an unknown room")
		}

		// State and auth chain at an event.
		state, chain, err := h.s.StateIDsAtEvent(ctx, roomID, after)
		if err != nil {
			t.Fatal(err)
		}
		want, err := h.s.StateIDsBefore(ctx, after)
		if err != nil {
			t.Fatal(err)
		}
		wantIDs := make([]string, 0, len(want))
		for _, id := range want {
			wantIDs = append(wantIDs, id)
		}
		sort.Strings(wantIDs)
		if !slices.Equal(state, wantIDs) {
			t.Errorf("state at %s: %v, want %v", after, state, wantIDs)
		}
		create, _ := h.s.CurrentStateEvent(ctx, roomID, "m.room.create", "")
		pl, _ := h.s.CurrentStateEvent(ctx, roomID, "m.room.power_levels", "")
		aliceJoin, _ := h.s.CurrentStateEvent(ctx, roomID, "m.room.member", "@alice:test")
		for _, id := range []string{create.EventID, pl.EventID, aliceJoin.EventID} {
			if !slices.Contains(chain, id) {
				t.Errorf("auth chain %v lacks %s", chain, id)
			}
		}
		authOfMsg, err := h.s.AuthChainIDs(ctx, roomID, after)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{create.EventID, pl.EventID, aliceJoin.EventID} {
			if !slices.Contains(authOfMsg, id) {
				t.Errorf("auth chain of the message %v lacks %s", authOfMsg, id)
			}
		}
		if slices.Contains(authOfMsg, after) || slices.Contains(authOfMsg, bobJoin.EventID) {
			t.Errorf("auth chain of the message holds too much: %v", authOfMsg)
		}

		// Federation form: no unsigned data.
		ev, err := h.s.FederationEvent(ctx, bobJoin.EventID)
		if err != nil {
			t.Fatal(err)
		}
		if ev.RoomID != roomID || strings.Contains(string(ev.JSON), `"unsigned"`) {
			t.Errorf("federation form of bob's join: %s", ev.JSON)
		}
		pdu, err := gomatrixserverlib.MustGetRoomVersion("11").NewEventFromUntrustedJSON(ev.JSON)
		if err != nil || pdu.EventID() != bobJoin.EventID {
			t.Errorf("the served event does not verify as itself: %v", err)
		}

		// Backfill: from the last event back, newest first.
		bf, err := h.s.BackfillEvents(ctx, roomID, []string{last}, 4)
		if err != nil {
			t.Fatal(err)
		}
		if got := pduIDs(bf); !slices.Equal(got, []string{last, after, bobJoin.EventID, before}) {
			t.Errorf("backfill: %v", got)
		}
		if bf, _ := h.s.BackfillEvents(ctx, roomID, []string{"$unknown", last}, 1); len(bf) != 1 || bf[0].EventID != last {
			t.Errorf("backfill limit 1: %v", pduIDs(bf))
		}

		// Missing events: between earliest and latest, oldest first.
		me, err := h.s.MissingEvents(ctx, roomID, []string{before}, []string{last}, 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := pduIDs(me); !slices.Equal(got, []string{bobJoin.EventID, after}) {
			t.Errorf("missing events: %v", got)
		}
		me, _ = h.s.MissingEvents(ctx, roomID, []string{before}, []string{last}, 1, 0)
		if got := pduIDs(me); !slices.Equal(got, []string{after}) {
			t.Errorf("missing events with limit 1: %v", got)
		}
		afterEv, _ := h.s.GetEvent(ctx, after)
		me, _ = h.s.MissingEvents(ctx, roomID, nil, []string{last}, 10, afterEv.Depth)
		if got := pduIDs(me); !slices.Equal(got, []string{after}) {
			t.Errorf("missing events from min_depth %d: %v", afterEv.Depth, got)
		}

		// Visibility: joined history hides what came before bob's join
		// from his server, not his own join.
		vis, err := h.s.ServerMaySee(ctx, "remote", roomID, []string{before, bobJoin.EventID, after, "$unknown"})
		if err != nil {
			t.Fatal(err)
		}
		if vis[before] || !vis[bobJoin.EventID] || !vis[after] || len(vis) != 3 {
			t.Errorf("remote sees %v", vis)
		}
		if vis, _ := h.s.ServerMaySee(ctx, "test", roomID, []string{before}); !vis[before] {
			t.Error("the room's own server does not see its history")
		}
		// bob leaves: his server no longer sees what follows, but still
		// sees his leave.
		if err := h.s.Leave(ctx, "@bob:remote", roomID, ""); err != nil {
			t.Fatal(err)
		}
		bobLeave, _ := h.s.CurrentStateEvent(ctx, roomID, "m.room.member", "@bob:remote")
		gone := sendText(t, h, roomID, "after bob left", "t4")
		vis, _ = h.s.ServerMaySee(ctx, "remote", roomID, []string{bobLeave.EventID, gone})
		if !vis[bobLeave.EventID] || vis[gone] {
			t.Errorf("after the leave remote sees %v", vis)
		}
		if in, _ := h.s.ServerInRoom(ctx, roomID, "remote"); in {
			t.Error("remote is still in the room after its only user left")
		}
	})
}

// TestServerVisibilityRules: the history visibility rules applied to a
// server, for each setting.
func TestServerVisibilityRules(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		for _, c := range []struct {
			hv                          string
			seesBefore, seesWhenInvited bool
		}{
			{"world_readable", true, true},
			{"shared", true, true},
			{"invited", false, true},
			{"joined", false, false},
			{"something_else", true, true}, // not understood: shared
		} {
			t.Run(c.hv, func(t *testing.T) {
				h := newHarness(t, db)
				ctx := context.Background()
				roomID := publicRoom(t, h)
				setHistoryVisibility(t, h, roomID, c.hv)
				early := sendText(t, h, roomID, "early", "e")
				ext, _ := h.s.Extremities(ctx, roomID)
				carol := "@carol:remote"
				invite := buildOn(t, h, roomID, "@alice:test", ext[0], "m.room.member", &carol, `{"membership":"invite"}`)
				if _, err := h.s.InputEvent(ctx, invite); err != nil {
					t.Fatal(err)
				}
				whileInvited := sendText(t, h, roomID, "while invited", "w")
				vis, err := h.s.ServerMaySee(ctx, "remote", roomID, []string{early, invite.EventID(), whileInvited})
				if err != nil {
					t.Fatal(err)
				}
				if vis[early] != c.seesBefore || vis[whileInvited] != c.seesWhenInvited {
					t.Errorf("%s: remote sees %v", c.hv, vis)
				}
				// The invite itself: visible where the rules allow it
				// before or after.
				if vis[invite.EventID()] != c.seesWhenInvited {
					t.Errorf("%s: the invite's visibility is %v", c.hv, vis[invite.EventID()])
				}
			})
		}
	})
}

// TestRejectedEventsAreNeverServed: a rejected event is unknown to every
// read; an outlier is served (by ID, and as a prev_event in a walk).
func TestRejectedEventsAreNeverServed(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h, roomID := roomWithHarness(t, db)
		ctx := context.Background()
		ext, _ := h.s.Extremities(ctx, roomID)
		bad := buildOn(t, h, roomID, "@mallory:test", ext[0], "m.room.message", nil, `{"body":"spam"}`)
		if err := h.s.StoreOutliers(ctx, roomID, []gomatrixserverlib.PDU{bad}); err != nil {
			t.Fatal(err)
		}
		var status string
		if err := db.QueryRow(ctx, `SELECT status FROM event_outliers WHERE event_id = $1`, bad.EventID()).Scan(&status); err != nil || status != statusRejected {
			t.Fatalf("the event was kept as %q (%v), want rejected", status, err)
		}
		if _, err := h.s.FederationEvent(ctx, bad.EventID()); !strings.Contains(errString(err), "not found") {
			t.Errorf("a rejected event is served: %v", err)
		}
		if evs, _ := h.s.FederationEvents(ctx, roomID, []string{bad.EventID()}); len(evs) != 0 {
			t.Error("a rejected event is served in a list")
		}
		if _, _, err := h.s.StateIDsAtEvent(ctx, roomID, bad.EventID()); err == nil {
			t.Error("state at a rejected event")
		}
		if bf, _ := h.s.BackfillEvents(ctx, roomID, []string{bad.EventID()}, 10); len(bf) != 0 {
			t.Errorf("backfill from a rejected event: %v", pduIDs(bf))
		}
		if vis, _ := h.s.ServerMaySee(ctx, "test", roomID, []string{bad.EventID()}); len(vis) != 0 {
			t.Error("visibility of a rejected event")
		}

		// An outlier (known by its ID alone) is served.
		topic := ""
		out := buildOn(t, h, roomID, "@alice:test", ext[0], "m.room.topic", &topic, `{"topic":"outlier"}`)
		if err := h.s.StoreOutliers(ctx, roomID, []gomatrixserverlib.PDU{out}); err != nil {
			t.Fatal(err)
		}
		got, err := h.s.FederationEvent(ctx, out.EventID())
		if err != nil || got.RoomID != roomID {
			t.Fatalf("an outlier: %+v %v", got, err)
		}
		if _, _, err := h.s.StateIDsAtEvent(ctx, roomID, out.EventID()); err == nil {
			t.Error("state at an outlier known by its ID alone")
		}
		if vis, _ := h.s.ServerMaySee(ctx, "remote", roomID, []string{out.EventID()}); !vis[out.EventID()] {
			t.Error("an outlier without state is not visible")
		}
		// Events of another room are not found through this one.
		other, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if evs, _ := h.s.FederationEvents(ctx, other.RoomID, []string{ext[0]}); len(evs) != 0 {
			t.Error("an event served through another room")
		}
	})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return strings.ToLower(err.Error())
}
