package filter

import (
	"reflect"
	"strings"
	"testing"

	"github.com/haven-chat/haven/internal/merr"
)

func strs(s ...string) *[]string {
	if s == nil {
		s = []string{}
	}
	return &s
}

func boolp(b bool) *bool { return &b }

// specExample is the request body example of POST /user/{userId}/filter.
const specExample = `{
  "event_fields": ["type", "content", "sender"],
  "event_format": "client",
  "presence": {
    "not_senders": ["@alice:example.com"],
    "types": ["m.presence"]
  },
  "room": {
    "ephemeral": {
      "not_rooms": ["!726s6s6q:example.com"],
      "not_senders": ["@spam:example.com"],
      "types": ["m.receipt", "m.typing"]
    },
    "state": {
      "not_rooms": ["!726s6s6q:example.com"],
      "types": ["m.room.*"]
    },
    "timeline": {
      "limit": 10,
      "not_rooms": ["!726s6s6q:example.com"],
      "not_senders": ["@spam:example.com"],
      "types": ["m.room.message"]
    }
  }
}`

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Filter
	}{
		{"empty object", `{}`, Filter{}},
		{"empty input", "  \n", Filter{}},
		{"spec example", specExample, Filter{
			EventFields: []string{"type", "content", "sender"},
			EventFormat: "client",
			Presence:    EventFilter{NotSenders: []string{"@alice:example.com"}, Types: strs("m.presence")},
			Room: RoomFilter{
				Ephemeral: RoomEventFilter{
					EventFilter: EventFilter{NotSenders: []string{"@spam:example.com"}, Types: strs("m.receipt", "m.typing")},
					NotRooms:    []string{"!726s6s6q:example.com"},
				},
				State: StateFilter{
					EventFilter: EventFilter{Types: strs("m.room.*")},
					NotRooms:    []string{"!726s6s6q:example.com"},
				},
				Timeline: RoomEventFilter{
					EventFilter: EventFilter{Limit: 10, NotSenders: []string{"@spam:example.com"}, Types: strs("m.room.message")},
					NotRooms:    []string{"!726s6s6q:example.com"},
				},
			},
		}},
		{"lazy loading (Element)", `{"room":{"state":{"lazy_load_members":true,"include_redundant_members":false},
			"timeline":{"limit":20,"unread_thread_notifications":true}}}`, Filter{Room: RoomFilter{
			State:    StateFilter{LazyLoadMembers: true},
			Timeline: RoomEventFilter{EventFilter: EventFilter{Limit: 20}, UnreadThreadNotifications: true},
		}}},
		{"federation format, include_leave, rooms", `{"event_format":"federation","room":{"include_leave":true,
			"rooms":["!a:x","!b:x"],"not_rooms":["!b:x"],"account_data":{"types":[]}}}`, Filter{
			EventFormat: "federation",
			Room: RoomFilter{
				Rooms: strs("!a:x", "!b:x"), NotRooms: []string{"!b:x"}, IncludeLeave: true,
				AccountData: RoomEventFilter{EventFilter: EventFilter{Types: strs()}},
			},
		}},
		{"contains_url both ways", `{"room":{"timeline":{"contains_url":true},"ephemeral":{"contains_url":false}}}`,
			Filter{Room: RoomFilter{
				Timeline:  RoomEventFilter{ContainsURL: boolp(true)},
				Ephemeral: RoomEventFilter{ContainsURL: boolp(false)},
			}}},
		{"empty lists: include lists kept, exclude lists dropped", `{"event_fields":[],"account_data":{"types":[],
			"not_types":[],"senders":[],"not_senders":[]}}`,
			Filter{AccountData: EventFilter{Types: strs(), Senders: strs()}}},
		{"null is absent", `{"event_fields":null,"event_format":null,"presence":null,"room":{"rooms":null,
			"timeline":{"limit":null,"types":null,"contains_url":null,"lazy_load_members":null}}}`, Filter{}},
		{"unknown keys ignored", `{"foo":1,"room":{"bar":[{}],"timeline":{"baz":"x","limit":5}},"Event_Format":"bad"}`,
			Filter{Room: RoomFilter{Timeline: RoomEventFilter{EventFilter: EventFilter{Limit: 5}}}}},
		{"integral number forms", `{"presence":{"limit":7.0},"account_data":{"limit":1e2}}`,
			Filter{Presence: EventFilter{Limit: 7}, AccountData: EventFilter{Limit: 100}}},
		{"limit 0 means not set", `{"room":{"timeline":{"limit":0}}}`, Filter{}},
		{"huge limits are lowered", `{"presence":{"limit":99999999999999999999999},"account_data":{"limit":1e400},
			"room":{"timeline":{"limit":100001}}}`, Filter{
			Presence: EventFilter{Limit: MaxLimit}, AccountData: EventFilter{Limit: MaxLimit},
			Room: RoomFilter{Timeline: RoomEventFilter{EventFilter: EventFilter{Limit: MaxLimit}}},
		}},
		{"escaped strings", `{"presence":{"senders":["@\u0061lice:x"]}}`, Filter{Presence: EventFilter{Senders: strs("@alice:x")}}},
		{"duplicate keys: last wins", `{"event_format":"client","event_format":"federation"}`, Filter{EventFormat: "federation"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name, in, code string
	}{
		{"not JSON", `{"room":`, "M_NOT_JSON"},
		{"not JSON text", `filter`, "M_NOT_JSON"},
		{"trailing garbage", `{} {}`, "M_NOT_JSON"},
		{"array", `[]`, "M_BAD_JSON"},
		{"string", `"x"`, "M_BAD_JSON"},
		{"null", `null`, "M_BAD_JSON"},
		{"number", `1`, "M_BAD_JSON"},
		{"room not object", `{"room":[]}`, "M_BAD_JSON"},
		{"presence not object", `{"presence":"x"}`, "M_BAD_JSON"},
		{"timeline not object", `{"room":{"timeline":true}}`, "M_BAD_JSON"},
		{"negative limit", `{"room":{"timeline":{"limit":-1}}}`, "M_BAD_JSON"},
		{"negative huge limit", `{"presence":{"limit":-1e400}}`, "M_BAD_JSON"},
		{"negative float limit", `{"presence":{"limit":-2.0}}`, "M_BAD_JSON"},
		{"fractional limit", `{"presence":{"limit":1.5}}`, "M_BAD_JSON"},
		{"string limit", `{"presence":{"limit":"10"}}`, "M_BAD_JSON"},
		{"bool limit", `{"account_data":{"limit":true}}`, "M_BAD_JSON"},
		{"bad event_format", `{"event_format":"raw"}`, "M_BAD_JSON"},
		{"empty event_format", `{"event_format":""}`, "M_BAD_JSON"},
		{"event_format case", `{"event_format":"Client"}`, "M_BAD_JSON"},
		{"event_format number", `{"event_format":1}`, "M_BAD_JSON"},
		{"types not list", `{"presence":{"types":"m.presence"}}`, "M_BAD_JSON"},
		{"types entry number", `{"presence":{"types":["a",1]}}`, "M_BAD_JSON"},
		{"types entry null", `{"presence":{"types":[null]}}`, "M_BAD_JSON"},
		{"not_senders entry object", `{"presence":{"not_senders":[{}]}}`, "M_BAD_JSON"},
		{"rooms entry list", `{"room":{"rooms":[["!a:x"]]}}`, "M_BAD_JSON"},
		{"not_rooms not list", `{"room":{"state":{"not_rooms":{}}}}`, "M_BAD_JSON"},
		{"event_fields entry bool", `{"event_fields":[true]}`, "M_BAD_JSON"},
		{"include_leave string", `{"room":{"include_leave":"true"}}`, "M_BAD_JSON"},
		{"contains_url number", `{"room":{"timeline":{"contains_url":1}}}`, "M_BAD_JSON"},
		{"lazy_load_members string", `{"room":{"state":{"lazy_load_members":"yes"}}}`, "M_BAD_JSON"},
		{"too many entries", `{"room":{"not_rooms":[` + strings.Repeat(`"!r:x",`, MaxListEntries) + `"!r:x"]}}`, "M_BAD_JSON"},
		{"too large", `{"x":"` + strings.Repeat("a", MaxBytes) + `"}`, "M_TOO_LARGE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse = %+v, want %s", f, tt.code)
			}
			if !merr.Is(err, tt.code) {
				t.Fatalf("Parse error = %v, want %s", err, tt.code)
			}
		})
	}
}

func TestParseListCapIsInclusive(t *testing.T) {
	in := `{"room":{"rooms":[` + strings.Repeat(`"!r:x",`, MaxListEntries-1) + `"!r:x"]}}`
	f, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(*f.Room.Rooms); n != MaxListEntries {
		t.Fatalf("len(rooms) = %d", n)
	}
}

func TestParseRoomEventFilter(t *testing.T) {
	f, err := ParseRoomEventFilter([]byte(`{"types":["m.room.message"],"not_senders":["@x:y"],"limit":5,
		"contains_url":true,"lazy_load_members":true,"rooms":["!a:b"]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := RoomEventFilter{
		EventFilter: EventFilter{Limit: 5, Types: strs("m.room.message"), NotSenders: []string{"@x:y"}},
		Rooms:       strs("!a:b"), ContainsURL: boolp(true), LazyLoadMembers: true,
	}
	if !reflect.DeepEqual(f, want) {
		t.Fatalf("got %+v want %+v", f, want)
	}
	for in, code := range map[string]string{
		`{"limit":-5}`:      "M_BAD_JSON",
		`{"types":[1]}`:     "M_BAD_JSON",
		`{"types":`:         "M_NOT_JSON",
		`["m.room.member"]`: "M_BAD_JSON",
	} {
		if _, err := ParseRoomEventFilter([]byte(in)); !merr.Is(err, code) {
			t.Errorf("ParseRoomEventFilter(%s) error = %v, want %s", in, err, code)
		}
	}
}

func TestParseQuery(t *testing.T) {
	tests := []struct {
		in     string
		want   Query
		code   string
		isZero bool
	}{
		{in: "", want: Query{}, isZero: true},
		{in: "0", want: Query{ID: "0"}},
		{in: "12345", want: Query{ID: "12345"}},
		{in: "abc", want: Query{ID: "abc"}},
		{in: `{}`, want: Query{Inline: true}},
		{in: ` {"room":{"timeline":{"limit":1}}}`, want: Query{Inline: true, Filter: Filter{
			Room: RoomFilter{Timeline: RoomEventFilter{EventFilter: EventFilter{Limit: 1}}}}}},
		{in: `{"room":`, code: "M_NOT_JSON"},
		{in: `{"room":{"timeline":{"limit":-1}}}`, code: "M_BAD_JSON"},
		{in: strings.Repeat("1", MaxIDBytes+1), code: "M_INVALID_PARAM"},
		{in: "1\n2", code: "M_INVALID_PARAM"},
	}
	for _, tt := range tests {
		got, err := ParseQuery(tt.in)
		if tt.code != "" {
			if !merr.Is(err, tt.code) {
				t.Errorf("ParseQuery(%q) error = %v, want %s", tt.in, err, tt.code)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseQuery(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseQuery(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if got.IsZero() != tt.isZero {
			t.Errorf("ParseQuery(%q).IsZero() = %v", tt.in, got.IsZero())
		}
	}
}

func TestEffectiveLimit(t *testing.T) {
	tests := []struct{ limit, def, max, want int }{
		{0, 10, 100, 10},
		{-3, 10, 100, 10},
		{5, 10, 100, 5},
		{500, 10, 100, 100},
		{500, 10, 0, 500},
		{0, 0, 100, 1},
		{0, 200, 100, 100},
		{1, 10, 1000, 1},
	}
	for _, tt := range tests {
		if got := EffectiveLimit(tt.limit, tt.def, tt.max); got != tt.want {
			t.Errorf("EffectiveLimit(%d, %d, %d) = %d, want %d", tt.limit, tt.def, tt.max, got, tt.want)
		}
	}
	f := EventFilter{Limit: 50}
	if got := f.EffectiveLimit(DefaultTimelineLimit, MaxTimelineLimit); got != 50 {
		t.Errorf("EventFilter.EffectiveLimit = %d", got)
	}
}

func TestMarshalShape(t *testing.T) {
	// A parsed filter marshals compactly: no empty sections, no zero values.
	f, err := Parse([]byte(`{"room":{"timeline":{"limit":3,"types":[]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	got := mustMarshal(t, f)
	if want := `{"room":{"timeline":{"limit":3,"types":[]}}}`; got != want {
		t.Fatalf("marshal = %s, want %s", got, want)
	}
}
