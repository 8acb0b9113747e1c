package syncapi

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/internal/merr"
)

// Sliding sync connections (MSC4186): what each connection (user, device,
// conn_id) was sent, kept in memory, bounded and expiring. A pos names one
// snapshot of a connection; the server keeps the last three of each (the
// client may repeat its last request, or the one before, when responses
// were lost), so an older pos, one from before a restart, or one of an
// expired connection is unknown (M_UNKNOWN_POS) and the client starts
// over.
//
// Memory: a snapshot holds one slidingSent per room the connection was
// sent (at most the user's rooms; ~100 bytes each), each pointing at a
// shared, immutable required_state (slidingReq: one per distinct
// required_state in a build) and at a shared, immutable list of the
// members sent through $LAZY (at most slidingLazyRoom per room and
// slidingLazyConn in all the rooms of a snapshot). Snapshots share what
// did not change. So a connection holds at most slidingSnaps x (rooms x
// ~100 B + slidingLazyConn x ~50 B), about 300 KB past the rooms at
// worst; BenchmarkSlidingConnHeap measures some 13-14 KB for a window of 20
// rooms with Element X's required_state. At most slidingConnsMax
// connections are kept.

const (
	// slidingConnsMax bounds the connections kept; the least recently
	// used goes first.
	slidingConnsMax = 20000
	// slidingConnIdle is how long an unused connection is kept.
	slidingConnIdle = 30 * time.Minute
	// slidingSnaps is the number of snapshots kept per connection.
	slidingSnaps = 3
	// slidingLazyRoom bounds the members remembered per room ($LAZY);
	// the least recently sent are forgotten first (and sent again when
	// they next appear).
	slidingLazyRoom = 100
	// slidingLazyConn bounds the members remembered in all the rooms of
	// a snapshot: past it, the rooms sent longest ago forget theirs.
	slidingLazyConn = 2000
)

// slidingSnap is what a connection had been sent at one pos.
type slidingSnap struct {
	// at: the stream positions the response was built up to.
	at Pos
	// sent: each room the client has, as it was last sent.
	sent map[string]slidingSent
	// counts: each list's count as last sent.
	counts map[string]int
	// shape is the request's (SlidingBody.shape) the snapshot was built for.
	shape uint64
	// window: the rooms the lists' windows and the subscriptions held,
	// sorted (shared with the snapshot before when the same).
	window []string
	// dms: the rooms of the user's m.direct as of the user's account
	// data position dmsAt (nil: not read), shared between snapshots.
	dms   map[string]bool
	dmsAt int64
	// ownSent: sent is this snapshot's own, not its predecessor's (which
	// is never changed: setSent and deleteSent copy it first).
	ownSent bool
}

// inWindow tells whether the snapshot's windows held the room.
func (snap *slidingSnap) inWindow(id string) bool {
	_, ok := slices.BinarySearch(snap.window, id)
	return ok
}

// setSent records how a room was sent.
func (snap *slidingSnap) setSent(id string, v slidingSent) {
	snap.own()
	snap.sent[id] = v
}

// deleteSent forgets a room.
func (snap *slidingSnap) deleteSent(id string) {
	if _, ok := snap.sent[id]; ok {
		snap.own()
		delete(snap.sent, id)
	}
}

func (snap *slidingSnap) own() {
	if snap.ownSent {
		return
	}
	snap.sent, snap.ownSent = maps.Clone(snap.sent), true
}

// slidingSent is how a room was last sent: the events position its
// timeline reached, and whether as an invite.
type slidingSent struct {
	pos    int64
	invite bool
	// required is the required_state the room was last sent with: the
	// client has the current state (as of pos) of the entries it covers.
	// When the room is asked with other state, the entries new to it
	// are sent; the entries dropped are forgotten (sent again if asked
	// again).
	required *slidingReq
	// lazy are the users whose member events the client was sent through
	// $LAZY (current as of pos), least recently sent first; at most
	// slidingLazyRoom. Shared between snapshots: never changed in place.
	lazy []string
	// limit is the timeline_limit the client last asked of the room.
	limit int
	// counts are the unread counts last sent.
	counts unreadCounts
}

// slidingReq is a required_state in a canonical form (sorted, without
// duplicates), shared by the rooms a build sent with it; never changed.
type slidingReq struct {
	key     string
	entries [][2]string
	// lazy: ["m.room.member", "$LAZY"] is one of the entries.
	lazy bool
}

type slidingConn struct {
	key  string
	last time.Time
	// gen numbers the snapshots; snaps holds the last slidingSnaps,
	// oldest first.
	gen   int64
	snaps [slidingSnaps]struct {
		gen  int64
		snap *slidingSnap
	}
}

// slidingConns holds every connection's snapshots.
type slidingConns struct {
	mu    sync.Mutex
	conns map[string]*slidingConn
	now   func() time.Time
	// types caches rooms' creation types (list filters room_types).
	types *lru.Cache[string, string]
	// builds counts the long-polls' builds (slidingPoll.Answer), for tests.
	builds atomic.Int64
}

func newSlidingConns() *slidingConns {
	return &slidingConns{conns: map[string]*slidingConn{}, now: time.Now, types: lru.New[string, string]("sliding_room_types", 50000)}
}

func slidingKey(user, device, connID string) string {
	return user + "\x00" + device + "\x00" + connID
}

// errUnknownPos is the answer to a pos the server does not know.
func errUnknownPos() error {
	return merr.Custom(http.StatusBadRequest, "M_UNKNOWN_POS", "Unknown position; start over without pos")
}

// get returns the snapshot named by pos.
func (c *slidingConns) get(key, pos string) (*slidingSnap, error) {
	n, err := strconv.ParseInt(pos, 10, 64)
	if err != nil {
		return nil, errUnknownPos()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	conn := c.conns[key]
	if conn == nil || c.now().Sub(conn.last) > slidingConnIdle {
		return nil, errUnknownPos()
	}
	for _, s := range conn.snaps {
		if s.snap != nil && s.gen == n {
			conn.last = c.now()
			return s.snap, nil
		}
	}
	return nil, errUnknownPos()
}

// put stores a snapshot (a new connection when reset) and returns its pos.
func (c *slidingConns) put(key string, snap *slidingSnap, reset bool) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	conn := c.conns[key]
	if conn == nil || reset {
		if conn == nil && len(c.conns) >= slidingConnsMax {
			c.evictLocked(now)
		}
		old := conn
		conn = &slidingConn{key: key}
		if old != nil {
			// Positions keep growing: an old pos never names a new snapshot.
			conn.gen = old.gen
		} else {
			conn.gen = now.UnixNano() / 1000
		}
		c.conns[key] = conn
	}
	conn.gen++
	conn.last = now
	copy(conn.snaps[:], conn.snaps[1:])
	conn.snaps[slidingSnaps-1].gen, conn.snaps[slidingSnaps-1].snap = conn.gen, snap
	return strconv.FormatInt(conn.gen, 10)
}

// evictLocked drops the expired connections, or the least recently used
// one when none has expired.
func (c *slidingConns) evictLocked(now time.Time) {
	var oldest *slidingConn
	for k, conn := range c.conns {
		if now.Sub(conn.last) > slidingConnIdle {
			delete(c.conns, k)
			continue
		}
		if oldest == nil || conn.last.Before(oldest.last) {
			oldest = conn
		}
	}
	if len(c.conns) >= slidingConnsMax && oldest != nil {
		delete(c.conns, oldest.key)
	}
}
