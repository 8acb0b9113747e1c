package syncapi

import (
	"testing"

	"github.com/haven-chat/haven/storage"
)

// TestHistoryTokens: /messages reads its own tokens as keys, older stream
// tokens and sync tokens as positions; the readers that page by position
// take a history token's position.
func TestHistoryTokens(t *testing.T) {
	for _, tc := range []struct {
		in     string
		want   pageFrom
		pos    int64
		refuse bool
	}{
		{in: "t7_42", want: pageFrom{key: topoKey{7, 42}, isKey: true}, pos: 42},
		{in: "t7_0", want: pageFrom{key: topoKey{7, 0}, isKey: true}, pos: 0},
		{in: "t42", want: pageFrom{stream: 42}, pos: 42},
		{in: "t0", want: pageFrom{stream: 0}, pos: 0},
		{in: "s42_1_2_3_4_5_6_7", want: pageFrom{stream: 42}, pos: 42},
		{in: "s42", want: pageFrom{stream: 42}, pos: 42},
		// Backfilled history sits at negative positions.
		{in: "t7_-1", want: pageFrom{key: topoKey{7, -1}, isKey: true}, pos: -1},
		{in: "t_5", refuse: true},
		{in: "t7_", refuse: true},
		{in: "t-3", refuse: true},
		{in: "tx", refuse: true},
		{in: "", refuse: true},
		{in: "x7_42", refuse: true},
	} {
		got, err := parseHistoryToken(tc.in)
		if tc.refuse {
			if err == nil {
				t.Errorf("%q: accepted as %+v", tc.in, got)
			}
			if _, err := parsePageToken(tc.in); err == nil {
				t.Errorf("%q: accepted as a stream token", tc.in)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.in, got, err, tc.want)
		}
		if pos, err := parsePageToken(tc.in); err != nil || pos != tc.pos {
			t.Errorf("%q as a stream token: %d %v, want %d", tc.in, pos, err, tc.pos)
		}
	}
	for _, k := range []topoKey{{1, 0}, {7, 42}, {1 << 62, 1 << 40}} {
		got, err := parseHistoryToken(historyToken(k))
		if err != nil || !got.isKey || got.key != k {
			t.Errorf("%+v: round trip %+v %v", k, got, err)
		}
	}
	if !(topoKey{1, 9}).less(topoKey{2, 1}) || !(topoKey{2, 1}).less(topoKey{2, 2}) || (topoKey{2, 2}).less(topoKey{2, 2}) {
		t.Error("key order")
	}
	if k := (topoKey{5, 10}).justBefore(); !k.less(topoKey{5, 10}) || (topoKey{5, 9}).less(k) {
		t.Errorf("just before (5,10): %+v", k)
	}
}

func TestLostTime(t *testing.T) {
	s := &Service{lost: []storage.RestoreWindow{
		{Stream: storage.StreamEvents, LostAfter: 100, Base: 100 + 1<<40},
		{Stream: storage.StreamToDevice, LostAfter: 7, Base: 7 + 1<<40},
	}}
	for _, tc := range []struct {
		p    Pos
		lost bool
	}{
		{Pos{Events: 100, ToDevice: 7}, false},         // the backup's own positions
		{Pos{Events: 50, ToDevice: 3}, false},          // from before the backup
		{Pos{Events: 101}, true},                       // an event lost with the restore
		{Pos{Events: 90, ToDevice: 8}, true},           // a to-device message lost
		{Pos{Events: 100 + 1<<40, ToDevice: 7}, false}, // the restored server's first position
		{Pos{Events: 100 + 1<<40 + 5}, false},          // the restored server's own
		{Pos{Events: 90, Typing: 1 << 45}, false},      // typing runs on the clock
	} {
		if got := s.lostTime(tc.p); got != tc.lost {
			t.Errorf("lostTime(%s) = %v, want %v", tc.p, got, tc.lost)
		}
	}
}
