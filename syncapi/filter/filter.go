package filter

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"github.com/haven-chat/haven/internal/merr"
)

// Event formats of Filter.EventFormat.
const (
	FormatClient     = "client"
	FormatFederation = "federation"
)

// Bounds applied by Parse.
const (
	// MaxListEntries is the most entries any list of a filter may hold;
	// a longer list is M_BAD_JSON.
	MaxListEntries = 1000
	// MaxLimit is the largest limit a parsed filter keeps; larger values
	// are lowered to it (callers clamp further with EffectiveLimit).
	MaxLimit = 100_000
	// MaxBytes is the largest filter text Parse accepts (M_TOO_LARGE).
	MaxBytes = 256 << 10
	// MaxIDBytes is the longest filter ID ParseQuery accepts.
	MaxIDBytes = 255
)

// Limits the sync engine and /messages apply with EffectiveLimit.
const (
	DefaultTimelineLimit = 10   // /sync timeline without a limit
	MaxTimelineLimit     = 1000 // /sync timeline upper bound
	DefaultMessagesLimit = 10   // /messages and /context without a limit
	MaxMessagesLimit     = 1000 // /messages and /context upper bound
)

// Filter is the top-level Matrix filter: the body of
// POST /user/{userId}/filter and the (inline or stored) filter of /sync.
type Filter struct {
	// EventFields lists dot-separated paths of the event fields to
	// include; nil (absent or empty) means all fields.
	EventFields []string `json:"event_fields,omitempty"`
	// EventFormat is FormatClient, FormatFederation or "" (absent, which
	// means FormatClient).
	EventFormat string      `json:"event_format,omitempty"`
	Presence    EventFilter `json:"presence,omitzero"`
	AccountData EventFilter `json:"account_data,omitzero"`
	Room        RoomFilter  `json:"room,omitzero"`
}

// RoomFilter selects rooms and what /sync returns for each of them.
type RoomFilter struct {
	// Rooms lists the rooms to include; nil means all rooms. It applies
	// before the filters of the sections below.
	Rooms *[]string `json:"rooms,omitempty"`
	// NotRooms lists rooms to exclude, even when listed in Rooms.
	NotRooms     []string        `json:"not_rooms,omitempty"`
	Ephemeral    RoomEventFilter `json:"ephemeral,omitzero"`
	IncludeLeave bool            `json:"include_leave,omitempty"`
	State        StateFilter     `json:"state,omitzero"`
	Timeline     RoomEventFilter `json:"timeline,omitzero"`
	AccountData  RoomEventFilter `json:"account_data,omitzero"`
}

// EventFilter filters events that are not room events (presence, global
// account data).
type EventFilter struct {
	// Limit is the maximum number of events; 0 means not set (the caller
	// applies its default, see EffectiveLimit).
	Limit int `json:"limit,omitempty"`
	// Types lists the event types to include, '*' matching any sequence
	// of characters; nil means all types, an empty list none.
	Types *[]string `json:"types,omitempty"`
	// NotTypes lists event types to exclude (with '*'), even when they
	// match Types.
	NotTypes []string `json:"not_types,omitempty"`
	// Senders lists the senders to include; nil means all, empty none.
	Senders *[]string `json:"senders,omitempty"`
	// NotSenders lists senders to exclude, even when listed in Senders.
	NotSenders []string `json:"not_senders,omitempty"`
}

// RoomEventFilter filters room events (timeline, ephemeral, room account
// data). It is also the filter parameter of /messages and /context.
type RoomEventFilter struct {
	EventFilter
	// Rooms lists the rooms to include; nil means all rooms.
	Rooms *[]string `json:"rooms,omitempty"`
	// NotRooms lists rooms to exclude, even when listed in Rooms.
	NotRooms []string `json:"not_rooms,omitempty"`
	// ContainsURL: nil ignores content.url; true keeps only events whose
	// content has a string url, false only events without one.
	ContainsURL               *bool `json:"contains_url,omitempty"`
	LazyLoadMembers           bool  `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool  `json:"include_redundant_members,omitempty"`
	UnreadThreadNotifications bool  `json:"unread_thread_notifications,omitempty"`
}

// StateFilter filters room state; it has exactly the fields of
// RoomEventFilter and converts to it freely.
type StateFilter RoomEventFilter

// FederationFormat reports whether events are to be sent in the
// federation format.
func (f *Filter) FederationFormat() bool { return f.EventFormat == FormatFederation }

// Parse decodes and validates a Filter.
//
// Text that is not JSON is M_NOT_JSON. A value of the wrong type, a
// negative or fractional limit, an event_format other than "client" or
// "federation", a non-string list entry or a list longer than
// MaxListEntries is M_BAD_JSON. Unknown keys are ignored, a null value is
// the same as an absent key, and keys are matched case-sensitively. Empty
// input (only whitespace) is the empty filter, as for request bodies.
//
// The spec asks for limits greater than 0; a limit of 0 is accepted and
// means "not set". Limits above MaxLimit are lowered to it. Empty
// not_* lists and an empty event_fields are normalised to nil (they mean
// the same as absent ones), so a parsed filter marshals back to JSON that
// parses to an equal Filter.
func Parse(data []byte) (Filter, error) {
	o, err := topObject(data)
	if err != nil {
		return Filter{}, err
	}
	var f Filter
	if f.EventFields, err = stringList(o, "event_fields", ""); err != nil {
		return Filter{}, err
	}
	if f.EventFields != nil && len(f.EventFields) == 0 {
		f.EventFields = nil
	}
	format, present, err := stringValue(o, "event_format", "")
	if err != nil {
		return Filter{}, err
	}
	if present {
		if format != FormatClient && format != FormatFederation {
			return Filter{}, merr.BadJSON("event_format must be %q or %q", FormatClient, FormatFederation)
		}
		f.EventFormat = format
	}
	if f.Presence, err = eventFilter(o, "presence", ""); err != nil {
		return Filter{}, err
	}
	if f.AccountData, err = eventFilter(o, "account_data", ""); err != nil {
		return Filter{}, err
	}
	if f.Room, err = roomFilter(o, "room"); err != nil {
		return Filter{}, err
	}
	return f, nil
}

// ParseRoomEventFilter decodes and validates a RoomEventFilter, the filter
// parameter of /messages and /context, with the rules of Parse.
func ParseRoomEventFilter(data []byte) (RoomEventFilter, error) {
	o, err := topObject(data)
	if err != nil {
		return RoomEventFilter{}, err
	}
	return roomEventFromObject(o, "")
}

// Query is the filter query parameter of /sync: either the ID of a
// stored filter or an inline filter. The zero Query (empty parameter) is
// "no filter".
type Query struct {
	// ID is the stored filter to load; "" when Inline or empty.
	ID string
	// Inline reports that the parameter was JSON, parsed into Filter.
	Inline bool
	Filter Filter
}

// IsZero reports whether the parameter was absent or empty.
func (q Query) IsZero() bool { return q.ID == "" && !q.Inline }

// ParseQuery classifies the filter query parameter of /sync. A value
// whose first non-space character is '{' is an inline filter, parsed with
// Parse (its errors are returned). Anything else is a filter ID, returned
// as is for the caller to load (an unknown ID is the caller's
// M_NOT_FOUND); an ID longer than MaxIDBytes or holding control
// characters is M_INVALID_PARAM.
func ParseQuery(s string) (Query, error) {
	if s == "" {
		return Query{}, nil
	}
	if t := strings.TrimLeft(s, " \t\r\n"); t != "" && t[0] == '{' {
		f, err := Parse([]byte(s))
		if err != nil {
			return Query{}, err
		}
		return Query{Inline: true, Filter: f}, nil
	}
	if len(s) > MaxIDBytes {
		return Query{}, merr.InvalidParam("filter ID is longer than %d bytes", MaxIDBytes)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return Query{}, merr.InvalidParam("filter ID holds a control character")
		}
	}
	return Query{ID: s}, nil
}

// EffectiveLimit returns limit, or def when limit is not set (<= 0),
// clamped to 1..max (max <= 0: no upper bound).
func EffectiveLimit(limit, def, max int) int {
	n := limit
	if n <= 0 {
		n = def
	}
	if max > 0 && n > max {
		n = max
	}
	if n < 1 {
		n = 1
	}
	return n
}

// EffectiveLimit is the package EffectiveLimit applied to f.Limit.
func (f *EventFilter) EffectiveLimit(def, max int) int { return EffectiveLimit(f.Limit, def, max) }

// ---- decoding ----

// object is a decoded JSON object whose values are left raw.
type object map[string]json.RawMessage

// field returns the raw value of key, with ok false when it is absent or null.
func (o object) field(key string) (json.RawMessage, bool) {
	raw, ok := o[key]
	if !ok || len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, false
	}
	return raw, true
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func topObject(data []byte) (object, error) {
	if len(data) > MaxBytes {
		return nil, merr.TooLarge("Filter is larger than %d bytes", MaxBytes)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return object{}, nil
	}
	if !json.Valid(data) {
		return nil, merr.NotJSON("Filter is not valid JSON")
	}
	if data[0] != '{' {
		return nil, merr.BadJSON("Filter must be a JSON object")
	}
	var o object
	if err := json.Unmarshal(data, &o); err != nil {
		return nil, merr.BadJSON("Filter must be a JSON object").Wrap(err)
	}
	return o, nil
}

// subObject returns the object at key; an absent or null key is an empty object.
func subObject(o object, key, path string) (object, error) {
	raw, ok := o.field(key)
	if !ok {
		return nil, nil
	}
	p := join(path, key)
	if raw[0] != '{' {
		return nil, merr.BadJSON("%s must be an object", p)
	}
	var sub object
	if err := json.Unmarshal(raw, &sub); err != nil {
		return nil, merr.BadJSON("%s must be an object", p).Wrap(err)
	}
	return sub, nil
}

// stringList decodes an array of strings. Absent or null is nil; an empty
// array is a non-nil empty slice.
func stringList(o object, key, path string) ([]string, error) {
	raw, ok := o.field(key)
	if !ok {
		return nil, nil
	}
	p := join(path, key)
	if raw[0] != '[' {
		return nil, merr.BadJSON("%s must be an array of strings", p)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, merr.BadJSON("%s must be an array of strings", p).Wrap(err)
	}
	if len(items) > MaxListEntries {
		return nil, merr.BadJSON("%s has %d entries, more than the %d allowed", p, len(items), MaxListEntries)
	}
	out := make([]string, len(items))
	for i, it := range items {
		if len(it) == 0 || it[0] != '"' {
			return nil, merr.BadJSON("%s[%d] must be a string", p, i)
		}
		if err := json.Unmarshal(it, &out[i]); err != nil {
			return nil, merr.BadJSON("%s[%d] must be a string", p, i).Wrap(err)
		}
	}
	return out, nil
}

// includeList is stringList for lists where absent (nil) and empty differ.
func includeList(o object, key, path string) (*[]string, error) {
	l, err := stringList(o, key, path)
	if err != nil || l == nil {
		return nil, err
	}
	return &l, nil
}

// excludeList is stringList for lists where empty means the same as absent.
func excludeList(o object, key, path string) ([]string, error) {
	l, err := stringList(o, key, path)
	if len(l) == 0 {
		return nil, err
	}
	return l, err
}

func stringValue(o object, key, path string) (string, bool, error) {
	raw, ok := o.field(key)
	if !ok {
		return "", false, nil
	}
	if raw[0] != '"' {
		return "", false, merr.BadJSON("%s must be a string", join(path, key))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, merr.BadJSON("%s must be a string", join(path, key)).Wrap(err)
	}
	return s, true, nil
}

func boolValue(o object, key, path string) (v, present bool, err error) {
	raw, ok := o.field(key)
	if !ok {
		return false, false, nil
	}
	switch string(raw) {
	case "true":
		return true, true, nil
	case "false":
		return false, true, nil
	}
	return false, false, merr.BadJSON("%s must be a boolean", join(path, key))
}

// limitValue decodes a limit: a non-negative integer (10.0 and 1e1 are
// integers too), lowered to MaxLimit.
func limitValue(o object, key, path string) (int, error) {
	raw, ok := o.field(key)
	if !ok {
		return 0, nil
	}
	p := join(path, key)
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, merr.BadJSON("%s must be an integer", p)
	}
	s := string(raw)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, merr.BadJSON("%s must not be negative", p)
		}
		return int(min(n, MaxLimit)), nil
	}
	// Out of int64 range, or written with a fraction or an exponent.
	v, err := strconv.ParseFloat(s, 64)
	if err != nil && !math.IsInf(v, 0) {
		return 0, merr.BadJSON("%s must be an integer", p)
	}
	if v != math.Trunc(v) {
		return 0, merr.BadJSON("%s must be an integer", p)
	}
	if v < 0 {
		return 0, merr.BadJSON("%s must not be negative", p)
	}
	if v > MaxLimit {
		return MaxLimit, nil
	}
	return int(v), nil
}

func eventFilter(parent object, key, path string) (EventFilter, error) {
	o, err := subObject(parent, key, path)
	if err != nil {
		return EventFilter{}, err
	}
	return eventFromObject(o, join(path, key))
}

func eventFromObject(o object, p string) (EventFilter, error) {
	var f EventFilter
	var err error
	if f.Limit, err = limitValue(o, "limit", p); err != nil {
		return EventFilter{}, err
	}
	if f.Types, err = includeList(o, "types", p); err != nil {
		return EventFilter{}, err
	}
	if f.NotTypes, err = excludeList(o, "not_types", p); err != nil {
		return EventFilter{}, err
	}
	if f.Senders, err = includeList(o, "senders", p); err != nil {
		return EventFilter{}, err
	}
	if f.NotSenders, err = excludeList(o, "not_senders", p); err != nil {
		return EventFilter{}, err
	}
	return f, nil
}

func roomEventFilter(parent object, key, path string) (RoomEventFilter, error) {
	o, err := subObject(parent, key, path)
	if err != nil {
		return RoomEventFilter{}, err
	}
	return roomEventFromObject(o, join(path, key))
}

func roomEventFromObject(o object, p string) (RoomEventFilter, error) {
	var f RoomEventFilter
	var err error
	if f.EventFilter, err = eventFromObject(o, p); err != nil {
		return RoomEventFilter{}, err
	}
	if f.Rooms, err = includeList(o, "rooms", p); err != nil {
		return RoomEventFilter{}, err
	}
	if f.NotRooms, err = excludeList(o, "not_rooms", p); err != nil {
		return RoomEventFilter{}, err
	}
	v, present, err := boolValue(o, "contains_url", p)
	if err != nil {
		return RoomEventFilter{}, err
	}
	if present {
		f.ContainsURL = &v
	}
	for _, b := range []struct {
		key string
		dst *bool
	}{
		{"lazy_load_members", &f.LazyLoadMembers},
		{"include_redundant_members", &f.IncludeRedundantMembers},
		{"unread_thread_notifications", &f.UnreadThreadNotifications},
	} {
		if *b.dst, _, err = boolValue(o, b.key, p); err != nil {
			return RoomEventFilter{}, err
		}
	}
	return f, nil
}

func roomFilter(parent object, key string) (RoomFilter, error) {
	o, err := subObject(parent, key, "")
	if err != nil {
		return RoomFilter{}, err
	}
	p := key
	var f RoomFilter
	if f.Rooms, err = includeList(o, "rooms", p); err != nil {
		return RoomFilter{}, err
	}
	if f.NotRooms, err = excludeList(o, "not_rooms", p); err != nil {
		return RoomFilter{}, err
	}
	if f.IncludeLeave, _, err = boolValue(o, "include_leave", p); err != nil {
		return RoomFilter{}, err
	}
	if f.Ephemeral, err = roomEventFilter(o, "ephemeral", p); err != nil {
		return RoomFilter{}, err
	}
	state, err := roomEventFilter(o, "state", p)
	if err != nil {
		return RoomFilter{}, err
	}
	f.State = StateFilter(state)
	if f.Timeline, err = roomEventFilter(o, "timeline", p); err != nil {
		return RoomFilter{}, err
	}
	if f.AccountData, err = roomEventFilter(o, "account_data", p); err != nil {
		return RoomFilter{}, err
	}
	return f, nil
}
