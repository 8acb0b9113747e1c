package httpx

import (
	"encoding/json"
	"testing"

	"github.com/haven-chat/haven/internal/merr"
)

// fuzzTarget has the field types request bodies use: strings, numbers,
// booleans, nested objects, lists, maps, raw JSON and pointers.
type fuzzTarget struct {
	Typing    bool                       `json:"typing"`
	Timeout   int64                      `json:"timeout"`
	Limit     int                        `json:"limit"`
	Ratio     float64                    `json:"ratio"`
	Body      string                     `json:"body"`
	Users     []string                   `json:"users"`
	Content   map[string]any             `json:"content"`
	Raw       json.RawMessage            `json:"raw"`
	Ptr       *int                       `json:"ptr"`
	Nested    struct{ Count uint8 }      `json:"nested"`
	PerDevice map[string]map[string]bool `json:"per_device"`
	Room      roomID                     `json:"room_id"`
}

func FuzzUnmarshal(f *testing.F) {
	for _, seed := range []string{
		``,
		` `,
		`{}`,
		`{"typing":true,"timeout":30000}`,
		`{"typing":"yes"}`,
		`{"timeout":1e400}`,
		`{"timeout":-9223372036854775809}`,
		`{"limit":1.5}`,
		`{"nested":{"Count":300}}`,
		`{"users":["@a:b",null,1]}`,
		`{"content":{"body":"hi","msgtype":"m.text"}}`,
		`{"raw":{"a":[1,2,{"b":null}]}}`,
		`{"ptr":null}`,
		`{"per_device":{"@a:b":{"DEV":true}}}`,
		`{"room_id":"!r:x"}`,
		`{"room_id":"r"}`,
		`{"room_id":5}`,
		`[]`,
		`null`,
		`"str"`,
		`{"a":`,
		`{"a":1}}`,
		"{\"body\":\"\xff\xfe\"}",
		`{"body":"\ud800"}`,
		`{"body":"a","body":{}}`,
		"\ufeff{}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&fuzzTarget{}, &map[string]any{}, &struct{}{}} {
			err := Unmarshal(body, v)
			if err == nil {
				continue
			}
			me, ok := err.(*merr.Error)
			if !ok {
				t.Fatalf("Unmarshal(%q) returned %T %v, want nil or *merr.Error", body, err, err)
			}
			switch me.Code {
			case "M_NOT_JSON", "M_BAD_JSON", "M_INVALID_PARAM":
			default:
				t.Fatalf("Unmarshal(%q) returned errcode %s", body, me.Code)
			}
			if me.Status != 400 || me.Msg == "" {
				t.Fatalf("Unmarshal(%q) returned %+v", body, me)
			}
		}
	})
}
