package notifier

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/haven-chat/haven/internal/metrics"
	"github.com/haven-chat/haven/syncapi/synctoken"
)

// Pos is one position per stream (the sync token).
type Pos = synctoken.Pos

// Membership of a user in a room ("join", "invite", "leave", "ban",
// "knock"; "peek" for a peeked room), with the events position it took
// effect at.
type Membership struct {
	State string
	Pos   int64
}

// Notifier holds the in-memory indexes that let /sync decide, without a
// database query, whether anything is new for a device, and wakes exactly
// the long-polls that must wake. It is fed in order by the bus.
type Notifier struct {
	mu sync.Mutex
	// cur is the position of every stream as far as this process has seen.
	cur Pos
	// floor is the position at start: anything before it may concern anyone,
	// since the per-user positions below only cover what happened since.
	floor Pos
	// members[room] is the set of joined users, invited[room] of invited ones.
	members map[string]map[string]struct{}
	invited map[string]map[string]struct{}
	// rooms[user][room] is the user's membership (join, invite, leave, ban, knock).
	rooms map[string]map[string]Membership
	// user[u] is, per stream, the latest position that concerns u.
	user map[string]*Pos
	// device[{u,d}] is the latest to-device position for that device.
	device map[devKey]int64
	// roomEvents[room], roomReceipts[room], roomTyping[room]: latest positions per room.
	roomEvents   map[string]int64
	roomReceipts map[string]int64
	roomTyping   map[string]int64
	// roomBump[room] is the position of the room's latest event of a
	// type that moves it up a sliding sync list (NoteBump).
	roomBump  map[string]int64
	listeners map[string][]*Listener
	// unread[{room, user}] is the user's unread count in the room, where known.
	unread map[roomUser]int
	// peeks[{user, device}][room] is a device's peek into a room;
	// peekers[room][user] counts the user's devices peeking into it
	// (peek.go).
	peeks   map[devKey]map[string]peek
	peekers map[string]map[string]int
	// advanced is closed (and replaced) whenever a position moves.
	advanced chan struct{}
	// work hands wake-ups of parked /syncs to idle wake workers.
	work chan func()
	// waiting counts the registered listeners.
	waiting atomic.Int64
}

type roomUser struct{ room, user string }

// peek is one device's peek into a room: the events position it started
// at and its position in the peeks stream.
type peek struct{ start, pos int64 }

type devKey struct{ user, device string }

// Listener is one waiting /sync.
type Listener struct {
	n      *Notifier
	user   string
	device string
	ch     chan struct{}
	// fn, when set, is run on a new goroutine instead of signalling ch
	// (a parked /sync, which holds no goroutine while it waits).
	fn func()
}

// OnWake makes the listener run fn on a goroutine of its own (an idle
// wake worker's) when it fires, at once if it fired already: a parked
// /sync waits without holding a goroutine.
func (l *Listener) OnWake(fn func()) {
	n := l.n
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case <-l.ch:
		n.spawn(fn)
	default:
		l.fn = fn
	}
}

// Wake returns the channel that receives when something for the listener commits.
func (l *Listener) Wake() <-chan struct{} { return l.ch }

// Close unregisters the listener.
func (l *Listener) Close() {
	n := l.n
	n.mu.Lock()
	ls := n.listeners[l.user]
	for i, x := range ls {
		if x == l {
			last := len(ls) - 1
			ls[i] = ls[last]
			ls[last] = nil
			ls = ls[:last]
			break
		}
	}
	if len(ls) == 0 {
		delete(n.listeners, l.user)
	} else {
		n.listeners[l.user] = ls
	}
	n.mu.Unlock()
	n.waiting.Add(-1)
	metrics.SyncWaiters.Dec()
}

// wakeWorkers is how many goroutines stay ready to answer parked /syncs.
// Their stacks have grown to what building an answer needs, so a wake-up
// does not pay for a new goroutine and its stack growth; when all are busy,
// a wake-up gets a goroutine of its own.
const wakeWorkers = 8

// spawn runs fn on an idle wake worker, or on a new goroutine if none is idle.
func (n *Notifier) spawn(fn func()) {
	select {
	case n.work <- fn:
	default:
		go fn()
	}
}

func (n *Notifier) wakeWorker() {
	for fn := range n.work {
		fn()
	}
}

// New makes an empty notifier starting at pos. It starts the wake
// workers, which live as long as the process.
func New(pos Pos) *Notifier {
	n := &Notifier{
		work:         make(chan func()),
		cur:          pos,
		floor:        pos,
		members:      make(map[string]map[string]struct{}),
		invited:      make(map[string]map[string]struct{}),
		rooms:        make(map[string]map[string]Membership),
		user:         make(map[string]*Pos),
		device:       make(map[devKey]int64),
		roomEvents:   make(map[string]int64),
		roomReceipts: make(map[string]int64),
		roomTyping:   make(map[string]int64),
		roomBump:     make(map[string]int64),
		listeners:    make(map[string][]*Listener),
		unread:       make(map[roomUser]int),
		peeks:        make(map[devKey]map[string]peek),
		peekers:      make(map[string]map[string]int),
		advanced:     make(chan struct{}),
	}
	for range wakeWorkers {
		go n.wakeWorker()
	}
	return n
}

// Listen registers a listener for a device. Register before sampling.
func (n *Notifier) Listen(user, device string) *Listener {
	l := &Listener{n: n, user: user, device: device, ch: make(chan struct{}, 1)}
	n.mu.Lock()
	n.listeners[user] = append(n.listeners[user], l)
	n.mu.Unlock()
	n.waiting.Add(1)
	metrics.SyncWaiters.Inc()
	return l
}

// HasNews tells whether anything concerning the device is after since.
func (n *Notifier) HasNews(user, device string, since Pos) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.userPosLocked(user, device).After(since)
}

// userPosLocked is the user's latest position in each stream (to-device:
// the device's), at least the notifier's start. n.mu is held.
func (n *Notifier) userPosLocked(user, device string) Pos {
	p := n.floor
	if u := n.user[user]; u != nil {
		p = p.Max(*u)
	}
	p.ToDevice = max(n.floor.ToDevice, n.device[devKey{user, device}])
	return p
}

// roomViewLocked is a room's latest positions, with mem as the user's
// membership. n.mu is held.
func (n *Notifier) roomViewLocked(room string, mem Membership) RoomView {
	ev := n.roomEvents[room]
	return RoomView{ID: room, Mem: mem, Events: ev, Receipts: n.roomReceipts[room], Typing: n.roomTyping[room], Bump: min(n.roomBump[room], ev)}
}

// Current is the position of every stream.
func (n *Notifier) Current() Pos {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cur
}

// RoomView is one of the user's rooms as a sync build sees it.
type RoomView struct {
	ID  string
	Mem Membership
	// Events, Receipts, Typing: the room's latest positions of each.
	Events, Receipts, Typing int64
	// Bump is the position of the room's latest event of a bump type
	// (NoteBump), 0 when none is known; never above Events.
	Bump int64
	// PeekPos is a peeked room's position in the peeks stream.
	PeekPos int64
}

// UserView is what a sync build needs from the indexes, copied at one
// instant: the user's rooms and the positions of every stream.
type UserView struct {
	Upto  Pos
	Rooms []RoomView // sorted by room ID
	// AccountData is the position of the user's latest account data
	// change (at least the notifier's start): what a build read of it
	// holds while this stays the same.
	AccountData int64
}

// View copies the user's rooms and their latest positions, consistent with Upto.
func (n *Notifier) View(user string) UserView {
	n.mu.Lock()
	rs := n.rooms[user]
	v := UserView{Upto: n.cur, Rooms: make([]RoomView, 0, len(rs)), AccountData: n.userPosLocked(user, "").AccountData}
	for r, m := range rs {
		v.Rooms = append(v.Rooms, n.roomViewLocked(r, m))
	}
	n.mu.Unlock()
	sort.Slice(v.Rooms, func(i, j int) bool { return v.Rooms[i].ID < v.Rooms[j].ID })
	return v
}

// Members returns the joined members of a room (a copy).
func (n *Notifier) Members(room string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.members[room]))
	for u := range n.members[room] {
		out = append(out, u)
	}
	return out
}

// SharesRoom tells whether two users share a joined room.
func (n *Notifier) SharesRoom(a, b string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for r, m := range n.rooms[a] {
		if m.State != "join" {
			continue
		}
		if _, ok := n.members[r][b]; ok {
			return true
		}
	}
	return false
}

func (n *Notifier) userPos(u string) *Pos {
	p := n.user[u]
	if p == nil {
		p = &Pos{}
		n.user[u] = p
	}
	return p
}

// wakeLocked signals every listener of the user. n.mu must be held.
func (n *Notifier) wakeLocked(user string) {
	for _, l := range n.listeners[user] {
		if f := l.fn; f != nil {
			l.fn = nil
			n.spawn(f)
			continue
		}
		select {
		case l.ch <- struct{}{}:
		default:
		}
	}
}

// setMembership records a membership change. n.mu must be held.
func (n *Notifier) setMembershipLocked(room, user, m string, pos int64) {
	delete(n.unread, roomUser{room, user})
	rs := n.rooms[user]
	if rs == nil {
		rs = make(map[string]Membership)
		n.rooms[user] = rs
	}
	rs[room] = Membership{State: m, Pos: pos}
	inv := n.invited[room]
	if m == "invite" {
		if inv == nil {
			inv = make(map[string]struct{})
			n.invited[room] = inv
		}
		inv[user] = struct{}{}
	} else if inv != nil {
		delete(inv, user)
	}
	set := n.members[room]
	if m == "join" {
		if set == nil {
			set = make(map[string]struct{})
			n.members[room] = set
		}
		set[user] = struct{}{}
	} else if set != nil {
		delete(set, user)
	}
}

// LoadMembership seeds the indexes at start.
func (n *Notifier) LoadMembership(room, user, m string, pos int64) {
	n.mu.Lock()
	n.setMembershipLocked(room, user, m, pos)
	n.mu.Unlock()
}

// LoadRoomPos seeds a room's latest event position at start.
func (n *Notifier) LoadRoomPos(room string, pos int64) {
	n.mu.Lock()
	n.roomEvents[room] = pos
	n.mu.Unlock()
}

// NoteBump records a room event of a type that moves the room up a
// sliding sync list (a message, not a state change); the caller calls it
// before OnRoomEvent of the same event, and at start with each room's
// latest.
func (n *Notifier) NoteBump(room string, pos int64) {
	n.mu.Lock()
	if pos > n.roomBump[room] {
		n.roomBump[room] = pos
	}
	n.mu.Unlock()
}

// What a room event does to the unread counts of the room's members.
const (
	UnreadNone    = iota
	UnreadCount   // raises the count of every member but the sender
	UnreadRecount // forget the counts; count them again from the database
)

// OnRoomEvent applies a committed room event: membership indexes and unread
// counts first, then positions, then wake-ups of every joined member and the
// event's target.
func (n *Notifier) OnRoomEvent(room string, pos int64, memberTarget, memberShip, sender string, unread int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if memberTarget != "" {
		n.setMembershipLocked(room, memberTarget, memberShip, pos)
	}
	for u := range n.members[room] {
		k := roomUser{room, u}
		switch c, ok := n.unread[k]; {
		case !ok:
		case unread == UnreadRecount:
			delete(n.unread, k)
		case unread == UnreadCount && u != sender:
			n.unread[k] = c + 1
		}
	}
	if unread == UnreadCount {
		// Sending a message reads everything before it.
		if _, ok := n.members[room][sender]; ok {
			n.unread[roomUser{room, sender}] = 0
		}
	}
	if pos > n.cur.Events {
		n.cur.Events = pos
		n.advancedLocked()
	}
	n.roomEvents[room] = pos
	for u := range n.members[room] {
		n.userPos(u).Events = pos
		n.wakeLocked(u)
	}
	if memberTarget != "" {
		n.userPos(memberTarget).Events = pos
		n.wakeLocked(memberTarget)
	}
	for u := range n.peekers[room] {
		n.userPos(u).Events = pos
		n.wakeLocked(u)
	}
}

// OnPeek applies a peek started (start > 0: the events position it
// started at) or ended (start 0) at position pos of the peeks stream, and
// wakes the user.
func (n *Notifier) OnPeek(user, device, room string, start, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := devKey{user, device}
	rooms := n.peeks[k]
	_, had := rooms[room]
	switch {
	case start > 0 && !had:
		if rooms == nil {
			rooms = make(map[string]peek)
			n.peeks[k] = rooms
		}
		rooms[room] = peek{start: start, pos: pos}
		ps := n.peekers[room]
		if ps == nil {
			ps = make(map[string]int)
			n.peekers[room] = ps
		}
		ps[user]++
	case start == 0 && had:
		delete(rooms, room)
		if len(rooms) == 0 {
			delete(n.peeks, k)
		}
		if ps := n.peekers[room]; ps != nil {
			if ps[user]--; ps[user] <= 0 {
				delete(ps, user)
			}
			if len(ps) == 0 {
				delete(n.peekers, room)
			}
		}
	}
	if pos > n.cur.Peeks {
		n.cur.Peeks = pos
		n.advancedLocked()
	}
	n.userPos(user).Peeks = pos
	n.wakeLocked(user)
}

// Peeking tells whether a device peeks into a room.
func (n *Notifier) Peeking(user, device, room string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.peeks[devKey{user, device}][room]
	return ok
}

// Room returns a room's latest positions, whoever is in it (Mem is
// left empty): for a room a user reads without being in it.
func (n *Notifier) Room(room string) RoomView {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.roomViewLocked(room, Membership{})
}

// Peeks returns the rooms a device peeks into, with the positions the
// peeks started at and the rooms' latest positions.
func (n *Notifier) Peeks(user, device string) []RoomView {
	n.mu.Lock()
	defer n.mu.Unlock()
	rooms := n.peeks[devKey{user, device}]
	out := make([]RoomView, 0, len(rooms))
	for r, p := range rooms {
		v := n.roomViewLocked(r, Membership{State: "peek", Pos: p.start})
		v.PeekPos = p.pos
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// OnReceipt applies a committed receipt. private receipts only concern their user.
func (n *Notifier) OnReceipt(room, user string, private bool, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.unread, roomUser{room, user})
	if pos > n.cur.Receipts {
		n.cur.Receipts = pos
		n.advancedLocked()
	}
	n.roomReceipts[room] = pos
	if private {
		n.userPos(user).Receipts = pos
		n.wakeLocked(user)
		return
	}
	for u := range n.members[room] {
		n.userPos(u).Receipts = pos
		n.wakeLocked(u)
	}
}

// OnTyping applies a typing change in a room.
func (n *Notifier) OnTyping(room string, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.Typing {
		n.cur.Typing = pos
		n.advancedLocked()
	}
	n.roomTyping[room] = pos
	for u := range n.members[room] {
		n.userPos(u).Typing = pos
		n.wakeLocked(u)
	}
}

// OnAccountData applies a change of a user's account data.
func (n *Notifier) OnAccountData(user string, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.AccountData {
		n.cur.AccountData = pos
		n.advancedLocked()
	}
	n.userPos(user).AccountData = pos
	n.wakeLocked(user)
}

// OnToDevice applies a message queued for one device.
func (n *Notifier) OnToDevice(user, device string, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.ToDevice {
		n.cur.ToDevice = pos
		n.advancedLocked()
	}
	n.device[devKey{user, device}] = pos
	n.wakeLocked(user)
}

// OnPresence applies a presence change: it concerns the user and everyone
// who shares a room with them.
func (n *Notifier) OnPresence(user string, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.Presence {
		n.cur.Presence = pos
		n.advancedLocked()
	}
	n.userPos(user).Presence = pos
	n.wakeLocked(user)
	seen := map[string]bool{user: true}
	for r, m := range n.rooms[user] {
		if m.State != "join" {
			continue
		}
		for u := range n.members[r] {
			if !seen[u] {
				seen[u] = true
				n.userPos(u).Presence = pos
				n.wakeLocked(u)
			}
		}
	}
}

// OnDeviceListChange: a user's devices or keys changed; everyone sharing a
// room with them (and they) must hear of it.
func (n *Notifier) OnDeviceListChange(user string, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.DeviceLists {
		n.cur.DeviceLists = pos
		n.advancedLocked()
	}
	n.userPos(user).DeviceLists = pos
	n.wakeLocked(user)
	for r, m := range n.rooms[user] {
		if m.State != "join" {
			continue
		}
		for u := range n.members[r] {
			n.userPos(u).DeviceLists = pos
			n.wakeLocked(u)
		}
	}
}

// Skipped moves the streams past positions at which nothing was written
// (a failed write), so that nobody waits for them. Nobody is woken: nothing
// new concerns anyone.
func (n *Notifier) Skipped(p Pos) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if next := n.cur.Max(p); next != n.cur {
		n.cur = next
		n.advancedLocked()
	}
}

// WakeAll wakes every listener (after a gap in the bus, for example).
func (n *Notifier) WakeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for u := range n.listeners {
		n.wakeLocked(u)
	}
}

// CountsAsUnread tells whether an event raises the unread count of the
// room's other members.
func CountsAsUnread(typ string, stateKey *string) bool {
	return stateKey == nil && (typ == "m.room.message" || typ == "m.room.encrypted")
}

// Unread returns a known unread count and the room's latest position.
func (n *Notifier) Unread(room, user string) (count int, known bool, roomPos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.unread[roomUser{room, user}]
	return c, ok, n.roomEvents[room]
}

// StoreUnread remembers a count computed up to roomPos, unless the room has
// moved on since.
func (n *Notifier) StoreUnread(room, user string, count int, roomPos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.roomEvents[room] == roomPos {
		if _, ok := n.members[room][user]; ok {
			n.unread[roomUser{room, user}] = count
		}
	}
}

// HasListener tells whether a user has a waiting /sync.
func (n *Notifier) HasListener(user string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.listeners[user]) > 0
}

// advancedLocked tells CatchUp waiters that a position moved. n.mu must be held.
func (n *Notifier) advancedLocked() {
	close(n.advanced)
	n.advanced = make(chan struct{})
}

// CaughtUp tells whether every stream has reached want (the streams a
// read-your-writes wait is for: events, receipts, account data, peeks).
func (n *Notifier) CaughtUp(want Pos) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return reached(n.cur, want)
}

// reached: the streams a read waits for (CatchUp) are at want.
func reached(cur, want Pos) bool {
	return cur.Events >= want.Events && cur.Receipts >= want.Receipts && cur.AccountData >= want.AccountData && cur.Peeks >= want.Peeks
}

// WaitFor returns once every stream has reached the given positions, or when
// ctx ends.
func (n *Notifier) WaitFor(ctx context.Context, want Pos) error {
	for {
		n.mu.Lock()
		cur, ch := n.cur, n.advanced
		n.mu.Unlock()
		if reached(cur, want) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// CoMembers returns the user and everyone who shares a joined room with them.
func (n *Notifier) CoMembers(user string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	seen := map[string]struct{}{user: {}}
	for r, m := range n.rooms[user] {
		if m.State != "join" {
			continue
		}
		for u := range n.members[r] {
			seen[u] = struct{}{}
		}
	}
	out := make([]string, 0, len(seen))
	for u := range seen {
		out = append(out, u)
	}
	return out
}

// Waiting counts the registered listeners (waiting /sync requests).
func (n *Notifier) Waiting() int {
	return int(n.waiting.Load())
}

// Joined tells whether the user is joined to the room now.
func (n *Notifier) Joined(user, room string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.members[room][user]
	return ok
}

// JoinedMembers tells whether the user is joined to the room and returns
// the room's joined members, at one instant.
func (n *Notifier) JoinedMembers(user, room string) (bool, []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, joined := n.members[room][user]
	out := make([]string, 0, len(n.members[room]))
	for u := range n.members[room] {
		out = append(out, u)
	}
	return joined, out
}

// UserRooms lists the rooms the user has any membership of.
func (n *Notifier) UserRooms(user string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.rooms[user]))
	for r := range n.rooms[user] {
		out = append(out, r)
	}
	return out
}

// InSomeRoom tells whether the user is joined to any room.
func (n *Notifier) InSomeRoom(user string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.rooms[user] {
		if m.State == "join" {
			return true
		}
	}
	return false
}

// MembershipOf is the user's current membership in the room and the
// position it took effect at; ok is false when the user never had one.
func (n *Notifier) MembershipOf(user, room string) (m Membership, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m, ok = n.rooms[user][room]
	return m, ok
}

// RoomMembers counts the room's joined and invited members and lists
// them, but for the user named by except (unsorted): a room summary's
// counts and the candidates for its heroes.
func (n *Notifier) RoomMembers(room, except string) (joined, invited int, others []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	joined, invited = len(n.members[room]), len(n.invited[room])
	others = make([]string, 0, joined+invited)
	for u := range n.members[room] {
		if u != except {
			others = append(others, u)
		}
	}
	for u := range n.invited[room] {
		if u != except {
			others = append(others, u)
		}
	}
	return joined, invited, others
}
