package syncapi

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi/streams"
)

type fakePush struct{ main, thread [2]int }

func (fakePush) OnRoomEvent(context.Context, *roomserver.Notice)                 {}
func (fakePush) OnReceipt(context.Context, string, string, string, int64, int64) {}
func (f fakePush) Unread(string, string) (int, int) {
	return f.main[0] + f.thread[0], f.main[1] + f.thread[1]
}
func (f fakePush) UnreadByThread(_, _ string, fn func(string, int, int)) {
	fn("", f.main[0], f.main[1])
	if f.thread[0] > 0 {
		fn("$root", f.thread[0], f.thread[1])
	}
}

func TestPushCountsInRoom(t *testing.T) {
	s := &Service{counts: streams.NewCounts(nil, nil, fakePush{main: [2]int{2, 1}, thread: [2]int{3, 0}})}
	tests := []struct {
		byThread bool
		want     string
	}{
		{false, `{"unread_notifications":{"notification_count":5,"highlight_count":1}}`},
		{true, `{"unread_notifications":{"notification_count":2,"highlight_count":1},"unread_thread_notifications":{"$root":{"notification_count":3,"highlight_count":0}}}`},
	}
	for _, tc := range tests {
		jr := &joinedRoom{}
		s.pushCounts(jr, "!r:x", "@u:x", tc.byThread)
		got, _ := json.Marshal(struct {
			U *unreadCounts            `json:"unread_notifications,omitempty"`
			T map[string]*unreadCounts `json:"unread_thread_notifications,omitempty"`
		}{jr.UnreadNotifications, jr.UnreadThreads})
		if string(got) != tc.want {
			t.Errorf("byThread %v: %s, want %s", tc.byThread, got, tc.want)
		}
	}
}

func TestAppendJSONThreadCounts(t *testing.T) {
	r := newResponse()
	r.NextBatch = "s1"
	r.Rooms.Join["!a:x"] = &joinedRoom{Summary: map[string]any{}, State: eventList{Events: []json.RawMessage{}},
		Timeline: timeline{Events: []json.RawMessage{}}, Ephemeral: eventList{Events: []json.RawMessage{}}, AccountData: eventList{Events: []json.RawMessage{}},
		UnreadNotifications: &unreadCounts{NotificationCount: 1},
		UnreadThreads:       map[string]*unreadCounts{"$b": {NotificationCount: 2, HighlightCount: 1}, "$a\"": {NotificationCount: 1}}}
	want, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	_ = json.Unmarshal(want, &a)
	if err := json.Unmarshal(r.AppendJSON(nil), &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("differs:\n%s\n%s", want, r.AppendJSON(nil))
	}
}
