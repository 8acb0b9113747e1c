package syncapi

import (
	"encoding/json"
	"sort"
	"strconv"

	"github.com/haven-chat/haven/syncapi/streams"
)

// AppendJSON writes the response as JSON. It gives the same document as
// encoding/json would, without re-validating the events, which the engine
// rendered itself: most of a /sync answer's cost is otherwise spent there.
func (r *Response) AppendJSON(b []byte) []byte {
	b = append(b, `{"next_batch":`...)
	b = appendString(b, r.NextBatch)
	b = append(b, `,"rooms":{"join":`...)
	b = appendRooms(b, r.Rooms.Join)
	b = append(b, `,"invite":{`...)
	for i, id := range sortedKeys(r.Rooms.Invite) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, id)
		b = append(b, `:{"invite_state":`...)
		b = appendList(b, r.Rooms.Invite[id].InviteState.Events)
		b = append(b, '}')
	}
	b = append(b, `},"leave":{`...)
	for i, id := range sortedKeys(r.Rooms.Leave) {
		if i > 0 {
			b = append(b, ',')
		}
		lr := r.Rooms.Leave[id]
		b = appendString(b, id)
		b = append(b, `:{"state":`...)
		b = appendList(b, lr.State.Events)
		b = append(b, `,"timeline":`...)
		b = lr.Timeline.appendJSON(b)
		b = append(b, `,"account_data":`...)
		b = appendList(b, lr.AccountData.Events)
		b = append(b, '}')
	}
	b = append(b, `},"knock":{`...)
	for i, id := range sortedKeys(r.Rooms.Knock) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, id)
		b = append(b, `:{"knock_state":`...)
		b = appendList(b, r.Rooms.Knock[id].KnockState.Events)
		b = append(b, '}')
	}
	b = append(b, '}')
	if len(r.Rooms.Peek) > 0 {
		b = append(b, `,"peek":`...)
		b = appendRooms(b, r.Rooms.Peek)
	}
	b = append(b, `},"account_data":`...)
	b = appendList(b, r.AccountData.Events)
	b = append(b, `,"presence":`...)
	b = appendList(b, r.Presence.Events)
	b = append(b, `,"to_device":`...)
	b = appendList(b, r.ToDevice.Events)
	b = append(b, `,"device_lists":{"changed":`...)
	b = appendStrings(b, r.DeviceLists.Changed)
	b = append(b, `,"left":`...)
	b = appendStrings(b, r.DeviceLists.Left)
	b = append(b, `},"device_one_time_keys_count":`...)
	b = appendAny(b, r.OTKCounts)
	b = append(b, `,"device_unused_fallback_key_types":`...)
	b = appendStrings(b, r.FallbackKeyTypes)
	return append(b, '}')
}

// appendRooms writes a room ID → room object (join and peek sections).
func appendRooms(b []byte, rooms map[string]*joinedRoom) []byte {
	b = append(b, '{')
	for i, id := range sortedKeys(rooms) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, id)
		b = append(b, ':')
		b = rooms[id].appendJSON(b)
	}
	return append(b, '}')
}

func (jr *joinedRoom) appendJSON(b []byte) []byte {
	b = append(b, `{"summary":`...)
	b = appendAny(b, jr.Summary)
	b = append(b, `,"state":`...)
	b = appendList(b, jr.State.Events)
	b = append(b, `,"timeline":`...)
	b = jr.Timeline.appendJSON(b)
	b = append(b, `,"ephemeral":`...)
	b = appendList(b, jr.Ephemeral.Events)
	b = append(b, `,"account_data":`...)
	b = appendList(b, jr.AccountData.Events)
	if u := jr.UnreadNotifications; u != nil {
		b = append(b, `,"unread_notifications":{"notification_count":`...)
		b = strconv.AppendInt(b, int64(u.NotificationCount), 10)
		b = append(b, `,"highlight_count":`...)
		b = strconv.AppendInt(b, int64(u.HighlightCount), 10)
		b = append(b, '}')
	}
	if len(jr.UnreadThreads) > 0 {
		b = append(b, `,"unread_thread_notifications":{`...)
		for i, root := range sortedKeys(jr.UnreadThreads) {
			if i > 0 {
				b = append(b, ',')
			}
			u := jr.UnreadThreads[root]
			b = appendString(b, root)
			b = append(b, `:{"notification_count":`...)
			b = strconv.AppendInt(b, int64(u.NotificationCount), 10)
			b = append(b, `,"highlight_count":`...)
			b = strconv.AppendInt(b, int64(u.HighlightCount), 10)
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

func (t *timeline) appendJSON(b []byte) []byte {
	b = append(b, `{"events":`...)
	b = appendEvents(b, t.Events)
	b = append(b, `,"limited":`...)
	b = strconv.AppendBool(b, t.Limited)
	if t.PrevBatch != "" {
		b = append(b, `,"prev_batch":`...)
		b = appendString(b, t.PrevBatch)
	}
	return append(b, '}')
}

// appendList writes {"events":[...]}.
func appendList(b []byte, evs []json.RawMessage) []byte {
	b = append(b, `{"events":`...)
	b = appendEvents(b, evs)
	return append(b, '}')
}

func appendEvents(b []byte, evs []json.RawMessage) []byte {
	b = append(b, '[')
	for i, e := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, ']')
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendAny is for the small, rare parts (summaries, key counts).
func appendAny(b []byte, v any) []byte {
	out, err := json.Marshal(v)
	if err != nil {
		return append(b, "{}"...)
	}
	return append(b, out...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// appendString writes s as a JSON string (streams.AppendString).
func appendString(b []byte, s string) []byte { return streams.AppendString(b, s) }
