package syncapi

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	r := newResponse()
	r.NextBatch = "s1_2_3_4_5_6_7_8"
	ev := json.RawMessage(`{"content":{"body":"hi \u2028 <b>"},"type":"m.room.message"}`)
	r.Rooms.Join["!a:x"] = &joinedRoom{
		Summary:             map[string]any{"m.heroes": []string{"@b:x"}, "m.joined_member_count": 2},
		State:               eventList{Events: []json.RawMessage{ev}},
		Timeline:            timeline{Events: []json.RawMessage{ev, ev}, Limited: true, PrevBatch: "t41"},
		Ephemeral:           eventList{Events: []json.RawMessage{}},
		AccountData:         eventList{Events: []json.RawMessage{}},
		UnreadNotifications: &unreadCounts{NotificationCount: 3, HighlightCount: 1},
	}
	r.Rooms.Join["!b\"\\\n\x01é\xff:x"] = &joinedRoom{Summary: map[string]any{}, State: eventList{Events: []json.RawMessage{}},
		Timeline: timeline{Events: []json.RawMessage{}}, Ephemeral: eventList{Events: []json.RawMessage{}}, AccountData: eventList{Events: []json.RawMessage{}}}
	r.Rooms.Invite["!c:x"] = &invitedRoom{InviteState: eventList{Events: []json.RawMessage{ev}}}
	r.Rooms.Leave["!d:x"] = &leftRoom{State: eventList{Events: []json.RawMessage{}}, Timeline: timeline{Events: []json.RawMessage{ev}}, AccountData: eventList{Events: []json.RawMessage{}}}
	r.Rooms.Knock["!k:x"] = &knockedRoom{KnockState: eventList{Events: []json.RawMessage{ev, ev}}}
	r.AccountData.Events = append(r.AccountData.Events, ev)
	r.Rooms.Peek = map[string]*joinedRoom{"!p:x": {Summary: map[string]any{}, State: eventList{Events: []json.RawMessage{ev}},
		Timeline: timeline{Events: []json.RawMessage{ev}}, Ephemeral: eventList{Events: []json.RawMessage{}}, AccountData: eventList{Events: []json.RawMessage{}}}}
	r.DeviceLists.Changed = []string{"@e:x"}
	r.OTKCounts["signed_curve25519"] = 5

	want, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	got := r.AppendJSON(nil)
	if !json.Valid(got) {
		t.Fatalf("invalid JSON: %s", got)
	}
	var a, b any
	_ = json.Unmarshal(want, &a)
	_ = json.Unmarshal(got, &b)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("differs:\n%s\n%s", want, got)
	}
}
