package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func contentOf(t *testing.T, ev Event) map[string]any {
	t.Helper()
	var e struct {
		Content map[string]any `json:"content"`
	}
	if err := json.Unmarshal(ev.JSON, &e); err != nil {
		t.Fatal(err)
	}
	return e.Content
}

func TestUpgradeRoom(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		for _, tc := range []struct{ from, to string }{{"9", "10"}, {"10", "11"}, {"11", "12"}, {"12", "12"}, {"12", "11"}, {"1", "12"}} {
			t.Run(tc.from+"to"+tc.to, func(t *testing.T) {
				name, topic := "Room "+tc.from, "Topic"
				alias := fmt.Sprintf("up%sto%s", tc.from, tc.to)
				override := `{"users":{"@alice:test":100,"@bob:test":50}}`
				if tc.from == "12" {
					override = `{"users":{"@bob:test":50}}` // v12: creators are not listed
				}
				res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{RoomVersion: tc.from, Name: &name, Topic: &topic,
					Preset: "public_chat", RoomAliasName: alias, Visibility: "public",
					InitialState:              []StateInit{{Type: "m.room.encryption", Content: json.RawMessage(`{"algorithm":"m.megolm.v1.aes-sha2"}`)}},
					PowerLevelContentOverride: json.RawMessage(override)})
				if err != nil {
					t.Fatal(err)
				}
				old := res.RoomID
				if _, err := h.s.Join(ctx, "@bob:test", old, ""); err != nil {
					t.Fatal(err)
				}
				if _, err := h.s.Join(ctx, "@carol:test", old, ""); err != nil {
					t.Fatal(err)
				}
				if err := h.s.Ban(ctx, "@alice:test", old, "@mallory:test", "spam"); err != nil {
					t.Fatal(err)
				}
				// bob (50) may not upgrade: the tombstone needs 100.
				_, err = h.s.UpgradeRoom(ctx, "@bob:test", old, UpgradeRequest{NewVersion: tc.to})
				wantCode(t, err, "M_FORBIDDEN")
				_, err = h.s.UpgradeRoom(ctx, "@dave:test", old, UpgradeRequest{NewVersion: tc.to})
				wantCode(t, err, "M_FORBIDDEN")

				newID, err := h.s.UpgradeRoom(ctx, "@alice:test", old, UpgradeRequest{NewVersion: tc.to})
				if err != nil {
					t.Fatal(err)
				}
				if v, _ := h.s.RoomVersion(ctx, newID); v != tc.to {
					t.Fatalf("new room version %q", v)
				}
				tomb, err := h.s.CurrentStateEvent(ctx, old, "m.room.tombstone", "")
				if err != nil || contentOf(t, tomb)["replacement_room"] != newID {
					t.Fatalf("tombstone: %v %v", tomb, err)
				}
				create, err := h.s.CurrentStateEvent(ctx, newID, "m.room.create", "")
				if err != nil {
					t.Fatal(err)
				}
				pred, _ := contentOf(t, create)["predecessor"].(map[string]any)
				if pred["room_id"] != old {
					t.Fatalf("predecessor %v", pred)
				}
				if tc.to != "12" && pred["event_id"] != tomb.EventID {
					t.Fatalf("predecessor event %v, tombstone %s", pred["event_id"], tomb.EventID)
				}
				for typ, field := range map[string]string{"m.room.name": "name", "m.room.topic": "topic", "m.room.join_rules": "join_rule", "m.room.encryption": "algorithm", "m.room.canonical_alias": "alias"} {
					oldEv, err1 := h.s.CurrentStateEvent(ctx, old, typ, "")
					newEv, err2 := h.s.CurrentStateEvent(ctx, newID, typ, "")
					if err2 != nil {
						t.Fatalf("%s not copied: %v", typ, err2)
					}
					if typ == "m.room.canonical_alias" {
						// moved: the old room's is emptied
						if err1 != nil || contentOf(t, oldEv)["alias"] != nil || contentOf(t, newEv)["alias"] != "#"+alias+":test" {
							t.Fatalf("canonical alias old %v new %v", contentOf(t, oldEv), contentOf(t, newEv))
						}
						continue
					}
					if err1 != nil || contentOf(t, oldEv)[field] != contentOf(t, newEv)[field] {
						t.Fatalf("%s: old %v new %v", typ, oldEv, newEv)
					}
				}
				if id, err := h.s.ResolveAlias(ctx, "#"+alias+":test"); err != nil || id != newID {
					t.Fatalf("alias now points to %s (%v)", id, err)
				}
				if pub, _ := h.s.Published(ctx, newID); !pub {
					t.Fatal("new room not published")
				}
				if pub, _ := h.s.Published(ctx, old); pub {
					t.Fatal("old room still published")
				}
				m, _, err := h.s.Membership(ctx, newID, "@mallory:test")
				if err != nil || m != "ban" {
					t.Fatalf("ban not copied: %q %v", m, err)
				}
				// bob keeps his level; alice's is the creator's (v12) or 100.
				bobLevel, err := h.s.PowerLevel(ctx, newID, "@bob:test")
				if err != nil || bobLevel != 50 {
					t.Fatalf("bob's level %d %v", bobLevel, err)
				}
				aliceLevel, _ := h.s.PowerLevel(ctx, newID, "@alice:test")
				if aliceLevel < 100 {
					t.Fatalf("alice's level %d", aliceLevel)
				}
				plEv, _ := h.s.CurrentStateEvent(ctx, newID, "m.room.power_levels", "")
				users, _ := contentOf(t, plEv)["users"].(map[string]any)
				if _, listed := users["@alice:test"]; listed != (tc.to != "12") {
					t.Fatalf("new room power levels users %v", users)
				}
				// In the old room, carol (0) may no longer speak.
				_, err = h.s.Send(ctx, Sender{"@carol:test", "C"}, SendRequest{RoomID: old, Type: "m.room.message", Content: json.RawMessage(`{"body":"x"}`), TxnID: "t" + alias})
				wantCode(t, err, "M_FORBIDDEN")
				// ... but may join the public replacement and speak there.
				if _, err := h.s.Join(ctx, "@carol:test", newID, ""); err != nil {
					t.Fatal(err)
				}
				if _, err := h.s.Send(ctx, Sender{"@carol:test", "C"}, SendRequest{RoomID: newID, Type: "m.room.message", Content: json.RawMessage(`{"body":"x"}`), TxnID: "n" + alias}); err != nil {
					t.Fatal(err)
				}
			})
		}
	})
}

func TestUpgradeRoomErrors(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		res, err := h.s.CreateRoom(ctx, "@alice:test", CreateRoomRequest{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.s.UpgradeRoom(ctx, "@alice:test", res.RoomID, UpgradeRequest{NewVersion: "99"})
		wantCode(t, err, "M_UNSUPPORTED_ROOM_VERSION")
		_, err = h.s.UpgradeRoom(ctx, "@alice:test", res.RoomID, UpgradeRequest{})
		wantCode(t, err, "M_MISSING_PARAM")
		_, err = h.s.UpgradeRoom(ctx, "@alice:test", "!unknown:test", UpgradeRequest{NewVersion: "11"})
		wantCode(t, err, "M_NOT_FOUND")
		_, err = h.s.UpgradeRoom(ctx, "@alice:test", "bad", UpgradeRequest{NewVersion: "11"})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = h.s.UpgradeRoom(ctx, "@alice:test", "!a\x00:test", UpgradeRequest{NewVersion: "11"})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = h.s.UpgradeRoom(ctx, "@alice:test", res.RoomID, UpgradeRequest{NewVersion: "12", AdditionalCreators: []string{"nope"}})
		wantCode(t, err, "M_INVALID_PARAM")
		// Nothing was written by the refused upgrades.
		if _, err := h.s.CurrentStateEvent(ctx, res.RoomID, "m.room.tombstone", ""); err == nil {
			t.Fatal("tombstone after refused upgrades")
		}
		// additional_creators become creators of a v12 room.
		newID, err := h.s.UpgradeRoom(ctx, "@alice:test", res.RoomID, UpgradeRequest{NewVersion: "12", AdditionalCreators: []string{"@bob:test"}})
		if err != nil {
			t.Fatal(err)
		}
		create, _ := h.s.CurrentStateEvent(ctx, newID, "m.room.create", "")
		if ac, _ := contentOf(t, create)["additional_creators"].([]any); len(ac) != 1 || ac[0] != "@bob:test" {
			t.Fatalf("additional_creators %v", contentOf(t, create))
		}
	})
}

func TestPowerLevelHelpers(t *testing.T) {
	var pl gomatrixserverlib.PowerLevelContent
	pl.Defaults()
	pl.Users = map[string]int64{"@a:x": 100}
	pl.Events = map[string]int64{"m.room.tombstone": 150}
	if got := highestLevel(pl); got != 150 {
		t.Fatalf("highestLevel %d", got)
	}
	for _, tc := range []struct {
		usersDefault, eventsDefault, invite int64
		wantEvents, wantInvite              int64
		changed                             bool
	}{
		{0, 0, 0, 50, 50, true},
		{60, 0, 0, 61, 61, true},
		{0, 75, 80, 75, 80, false},
		{0, 50, 0, 50, 50, true},
	} {
		p := pl
		p.UsersDefault, p.EventsDefault, p.Invite = tc.usersDefault, tc.eventsDefault, tc.invite
		got, changed := restrictPowerLevels(p)
		if got.EventsDefault != tc.wantEvents || got.Invite != tc.wantInvite || changed != tc.changed {
			t.Errorf("restrict(%+v) = events %d invite %d changed %v", tc, got.EventsDefault, got.Invite, changed)
		}
	}
	// The clone does not share maps with the original.
	c := clonePowerLevels(pl)
	c.Users["@b:x"] = 1
	if _, ok := pl.Users["@b:x"]; ok {
		t.Fatal("clone shares users")
	}
}
