package federationapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

func TestSaneStrippedState(t *testing.T) {
	parse := func(raw string) gomatrixserverlib.InviteStrippedState {
		var st gomatrixserverlib.InviteStrippedState
		if err := json.Unmarshal([]byte(raw), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	good := `{"type":"m.room.name","state_key":"","sender":"@a:x","content":{"name":"N"}}`
	for _, c := range []struct {
		name string
		in   []string
		want int
	}{
		{"good", []string{good, `{"type":"m.room.create","state_key":"","sender":"@a:x","content":{}}`}, 2},
		{"no type", []string{`{"state_key":"","sender":"@a:x","content":{}}`}, 0},
		{"no state_key", []string{`{"type":"m.room.name","sender":"@a:x","content":{}}`}, 0},
		{"content not an object", []string{`{"type":"m.room.name","state_key":"","sender":"@a:x","content":"x"}`}, 0},
		{"content null", []string{`{"type":"m.room.name","state_key":"","sender":"@a:x","content":null}`}, 0},
		{"sender not a user", []string{`{"type":"m.room.name","state_key":"","sender":"a","content":{}}`}, 0},
		{"too many", func() []string {
			l := make([]string, 80)
			for i := range l {
				l[i] = good
			}
			return l
		}(), maxStrippedEvents},
		{"too large", []string{`{"type":"m.room.topic","state_key":"","sender":"@a:x","content":{"topic":"` + strings.Repeat("x", maxStrippedBytes) + `"}}`, good}, 1},
	} {
		var in []gomatrixserverlib.InviteStrippedState
		for _, raw := range c.in {
			in = append(in, parse(raw))
		}
		got := saneStrippedState(in)
		if got == nil || len(got) != c.want {
			t.Errorf("%s: kept %d, want %d", c.name, len(got), c.want)
		}
		for _, e := range got {
			if !json.Valid(e) {
				t.Errorf("%s: invalid JSON %s", c.name, e)
			}
		}
	}
}

func TestKnockVersions(t *testing.T) {
	got := map[gomatrixserverlib.RoomVersion]bool{}
	for _, v := range knockVersions() {
		got[v] = true
	}
	for _, v := range []gomatrixserverlib.RoomVersion{"7", "8", "9", "10", "11"} {
		if !got[v] {
			t.Errorf("room version %s knows knocking", v)
		}
	}
	for _, v := range []gomatrixserverlib.RoomVersion{"1", "6"} {
		if got[v] {
			t.Errorf("room version %s does not know knocking", v)
		}
	}
}
