package syncapi

import (
	"math"
	"strconv"
	"strings"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/syncapi/synctoken"
)

// Pos is one position per stream: the sync token (synctoken).
type Pos = synctoken.Pos

// ParsePos reads a sync token.
func ParsePos(s string) (Pos, error) { return synctoken.Parse(s) }

// A stream pagination token is "t" and an events-stream position: the
// position just before the next event to return in the given direction.
// Relations, threads and search page by it, and /sync's prev_batch is one.
func pageToken(pos int64) string { return "t" + strconv.FormatInt(pos, 10) }

// topoKey is an event's place in its room's history: its topological depth
// (roomserver.Event.Topo), then its stream position. /messages and /context
// order by it, so that events received late from other servers take their
// place in the DAG instead of looking newest.
type topoKey struct{ topo, pos int64 }

// less orders keys as history does.
func (k topoKey) less(o topoKey) bool {
	return k.topo < o.topo || k.topo == o.topo && k.pos < o.pos
}

// justBefore is the greatest key below k (positions are integers): a
// token at it leaves k's event to the other side.
func (k topoKey) justBefore() topoKey { return topoKey{k.topo, k.pos - 1} }

// Bounds of the key space: every event's key lies between them.
var (
	bottomKey = topoKey{math.MinInt64, 0}
	topKey    = topoKey{math.MaxInt64, math.MaxInt64}
)

// A history token of /messages and /context is "t", the topological
// depth, "_" and the position: like a stream token, a point between two
// events — backwards returns the events with keys at or below it, forwards
// those above it.
func historyToken(k topoKey) string {
	return "t" + strconv.FormatInt(k.topo, 10) + "_" + strconv.FormatInt(k.pos, 10)
}

// pageFrom is a parsed pagination token: a history token's key, or (for
// a stream token or a sync token) a stream position, which the reader maps
// to a key in the room (Service.keyAtPos).
type pageFrom struct {
	key    topoKey
	stream int64
	isKey  bool
}

// parseHistoryToken accepts a history token, a stream token or a sync
// token (whose events position is used), as the spec allows all for
// /messages.
func parseHistoryToken(s string) (pageFrom, error) {
	bad := merr.InvalidParam("Invalid pagination token")
	if rest, ok := strings.CutPrefix(s, "t"); ok {
		a, b, isKey := strings.Cut(rest, "_")
		if !isKey {
			n, err := strconv.ParseInt(rest, 10, 64)
			if err != nil || n < 0 {
				return pageFrom{}, bad
			}
			return pageFrom{stream: n}, nil
		}
		topo, err1 := strconv.ParseInt(a, 10, 64)
		pos, err2 := strconv.ParseInt(b, 10, 64)
		// pos < 0: backfilled history (roomserver/backfill.go).
		if err1 != nil || err2 != nil {
			return pageFrom{}, bad
		}
		return pageFrom{key: topoKey{topo, pos}, isKey: true}, nil
	}
	p, err := ParsePos(s)
	if err != nil {
		return pageFrom{}, bad
	}
	return pageFrom{stream: p.Events}, nil
}

// parsePageToken reads a stream token or a sync token (whose events
// position is used); of a history token it takes the position.
func parsePageToken(s string) (int64, error) {
	p, err := parseHistoryToken(s)
	if p.isKey {
		return p.key.pos, err
	}
	return p.stream, err
}

// lostTime tells whether a token names a position handed out before a
// restore and lost with it (storage.RestoreWindow): any stream's position
// inside a window of that stream.
func (s *Service) lostTime(p Pos) bool {
	for _, w := range s.lost {
		var pos int64
		switch w.Stream {
		case storage.StreamEvents:
			pos = p.Events
		case storage.StreamReceipts:
			pos = p.Receipts
		case storage.StreamAccountData:
			pos = p.AccountData
		case storage.StreamToDevice:
			pos = p.ToDevice
		case storage.StreamDeviceLists:
			pos = p.DeviceLists
		case storage.StreamPresence:
			pos = p.Presence
		case storage.StreamPeeks:
			pos = p.Peeks
		default:
			continue
		}
		if w.Contains(pos) {
			return true
		}
	}
	return false
}
