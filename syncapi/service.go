package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/haven-chat/haven/internal/keyed"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/internal/stream"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/syncapi/notifier"
	"github.com/haven-chat/haven/syncapi/streams"
)

// bus is the part of the event bus the sync engine needs.
type bus interface {
	Publish(topic string, data []byte) error
	Subscribe(topic string, fn func(data []byte)) (func(), error)
}

// rooms is what the sync engine asks the roomserver.
type rooms interface {
	Position() int64
	AllRoomMemberships(ctx context.Context, fn func(roomID, userID, membership string, pos int64)) error
	AllRoomPositions(ctx context.Context, fn func(roomID string, pos int64)) error
	StateIDsAtSnapshot(ctx context.Context, snap int64) (map[[2]string]string, error)
	StateIDsAfter(ctx context.Context, ev roomserver.Event) (map[[2]string]string, error)
	Membership(ctx context.Context, roomID, userID string) (string, int64, error)
	Forgotten(ctx context.Context, userID, roomID string) (bool, error)
	FlushSearchIndex(ctx context.Context) error
	Published(ctx context.Context, roomID string) (bool, error)
}

// AccountDataItem is one account data entry; RoomID is "" for global data.
type AccountDataItem = streams.AccountDataItem

// users is what the sync engine asks the user API.
type users interface {
	GetFilter(ctx context.Context, userID, filterID string) ([]byte, error)
	AccountDataSince(ctx context.Context, userID string, after, upto int64) ([]AccountDataItem, error)
	AccountDataPosition() int64
	// IgnoredUsers is the user's ignore list (m.ignored_user_list).
	IgnoredUsers(ctx context.Context, userID string) (map[string]struct{}, error)
}

// Options tune the sync engine.
type Options struct {
	// PresenceEnabled shares presence between users who share rooms.
	PresenceEnabled bool
	// RecentEvents is how many recent events per room are kept in memory.
	RecentEvents int
	// RecentRooms bounds the rooms with recent events in memory.
	RecentRooms int
	// Keys, when set, feeds to-device messages, device lists and key
	// counts into /sync (keys.go).
	Keys KeySource
	// Push, when set, evaluates push rules for each event and gives the
	// notification counts (push.go); without it every message from
	// others counts.
	Push PushCounts
	// Backfill, when set (federation on), fetches a room's older history
	// from the other servers in it when /messages runs out of it here.
	Backfill Backfiller
}

// Backfiller fetches history from before what this server has of a room
// and answers how many events it stored (the roomserver).
type Backfiller interface {
	Backfill(ctx context.Context, roomID string, belowTopo int64, limit int) (int, error)
}

// Service is the sync engine: /sync, /messages, /context, receipts, typing,
// presence and read markers.
type Service struct {
	db    *storage.DB
	bus   bus
	rooms rooms
	users users
	opts  Options
	n     *notifier.Notifier

	rendered *lru.Cache[string, *clientEvent]
	recent   *lru.Cache[string, *recentRoom]
	// rel caches the relation aggregates of parent events (relations.go).
	rel *relCache
	// follow hands on every events position in order, reading what the
	// bus lost from the database.
	follow *roomserver.Follower

	receiptSeq    *stream.Sequencer
	presenceSeq   *stream.Sequencer
	peekSeq       *stream.Sequencer
	typing        *streams.Typing
	presence      *streams.Presence
	presenceLocks keyed.Mutex
	// buildSlots bounds the responses being built at once.
	buildSlots chan struct{}
	unsubs     []func()
	// lazySent remembers the member events each device was sent, for
	// lazy-loading (roomstate.go).
	lazySent *lazySent
	// The stream readers (streams/).
	accountDataStream *streams.AccountData
	receipts          *streams.Receipts
	invites           *streams.Invites
	toDevice          *streams.ToDevice
	deviceLists       *streams.DeviceLists
	keyCountsStream   *streams.KeyCounts
	counts            *streams.Counts
	// lost are the restore windows: positions handed out before a restore
	// that the restored database does not have (storage.RestoreWindow).
	lost []storage.RestoreWindow
	// slidingConns are the sliding sync connections (sliding_conn.go).
	slidingConns *slidingConns
}

// New builds the sync engine and its in-memory indexes, and subscribes to the bus.
func New(ctx context.Context, db *storage.DB, b bus, rs rooms, us users, opts Options) (*Service, error) {
	if opts.RecentEvents <= 0 {
		opts.RecentEvents = 32
	}
	if opts.RecentRooms <= 0 {
		opts.RecentRooms = 2000
	}
	var lastReceipt, lastPresence int64
	if err := db.QueryRow(ctx, `SELECT COALESCE(MAX(pos), 0) FROM receipts`).Scan(&lastReceipt); err != nil {
		return nil, fmt.Errorf("receipts position: %w", err)
	}
	if err := db.QueryRow(ctx, `SELECT COALESCE(MAX(pos), 0) FROM presence`).Scan(&lastPresence); err != nil {
		return nil, fmt.Errorf("presence position: %w", err)
	}
	// A restored database: its streams continue above the positions
	// handed out before the restore, and tokens naming those are answered
	// as initial syncs (lostTime).
	lost, err := storage.RestoreWindows(ctx, db)
	if err != nil {
		return nil, err
	}
	floors := map[string]int64{}
	for _, w := range lost {
		floors[w.Stream] = max(floors[w.Stream], w.Base)
	}
	lastReceipt = max(lastReceipt, floors[storage.StreamReceipts])
	lastPresence = max(lastPresence, floors[storage.StreamPresence])
	s := &Service{
		db: db, bus: b, rooms: rs, users: us, opts: opts,
		rendered:   lru.New[string, *clientEvent]("client_events", 5000),
		recent:     lru.New[string, *recentRoom]("recent_events", opts.RecentRooms),
		rel:        newRelCache(20000),
		typing:     streams.NewTyping(),
		buildSlots: make(chan struct{}, max(4, 2*runtime.GOMAXPROCS(0))),
		presence:   streams.NewPresence(),
		lazySent:   newLazySent(50000),

		slidingConns: newSlidingConns(),
		lost:         lost,

		accountDataStream: streams.NewAccountData(us),
		receipts:          streams.NewReceipts(db),
		invites:           streams.NewInvites(db),
		toDevice:          streams.NewToDevice(opts.Keys),
		deviceLists:       streams.NewDeviceLists(db),
		keyCountsStream:   streams.NewKeyCounts(opts.Keys),
	}
	// A failed write's position is published as a skip: a receipt notice
	// saying so, a presence entry with no user.
	s.receiptSeq = stream.New(lastReceipt, s.publishTo(TopicReceipts, func(pos int64) any { return ReceiptNotice{Pos: pos, Skip: true} }))
	s.presenceSeq = stream.New(lastPresence, s.publishTo(TopicPresence, func(pos int64) any { return PresenceNotice{Pos: pos} }))
	// Subscribe before reading the positions so nothing committed in between is lost:
	// notices for positions already loaded are simply applied again.
	var pending []func()
	var pmu sync.Mutex
	ready := false
	deliver := func(f func()) {
		pmu.Lock()
		if !ready {
			pending = append(pending, f)
			pmu.Unlock()
			return
		}
		pmu.Unlock()
		f()
	}
	subscribe := func(topic string, fn func([]byte)) error {
		unsub, err := b.Subscribe(topic, func(d []byte) { deliver(func() { fn(d) }) })
		if err != nil {
			return err
		}
		s.unsubs = append(s.unsubs, unsub)
		return nil
	}
	for topic, fn := range map[string]func([]byte){
		roomserver.Topic: s.onRoomEvent,
		TopicReceipts:    s.onReceipt,
		TopicTyping:      s.onTyping,
		TopicPresence:    s.onPresence,
		TopicAccountData: s.onAccountData,
		TopicToDevice:    s.onToDevice,
		TopicDeviceLists: s.onDeviceList,
		TopicPeeks:       s.onPeek,
	} {
		if err := subscribe(topic, fn); err != nil {
			s.Close()
			return nil, err
		}
	}
	if err := s.loadPresence(ctx); err != nil {
		s.Close()
		return nil, err
	}
	start := Pos{
		Events:      rs.Position(),
		Receipts:    lastReceipt,
		AccountData: us.AccountDataPosition(),
		Typing:      s.typing.Pos(),
		Presence:    lastPresence,
	}
	td, dl, err := s.loadKeys(ctx, start.Events)
	if err != nil {
		s.Close()
		return nil, err
	}
	start.ToDevice, start.DeviceLists = td, dl
	s.follow = roomserver.NewFollower(db, start.Events, s.applyRoomEvent)
	s.n = notifier.New(start)
	s.counts = streams.NewCounts(db, s.n, opts.Push)
	if err := rs.AllRoomMemberships(ctx, func(room, user, m string, pos int64) { s.n.LoadMembership(room, user, m, pos) }); err != nil {
		s.Close()
		return nil, err
	}
	if err := rs.AllRoomPositions(ctx, s.n.LoadRoomPos); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.loadBumps(ctx); err != nil {
		s.Close()
		return nil, err
	}
	lastPeek, err := s.loadPeeks(ctx)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.peekSeq = stream.New(max(lastPeek, floors[storage.StreamPeeks]), s.publishTo(TopicPeeks, func(pos int64) any { return peekNotice{Pos: pos} }))
	pmu.Lock()
	ready = true
	queued := pending
	pending = nil
	pmu.Unlock()
	for _, f := range queued {
		f()
	}
	go s.typing.ExpireLoop(func() time.Time { return now() }, s.n.OnTyping)
	return s, nil
}

// Close unsubscribes from the bus and stops the typing expiry.
func (s *Service) Close() {
	for _, u := range s.unsubs {
		u()
	}
	s.unsubs = nil
	if s.follow != nil {
		s.follow.Close()
	}
	if s.typing != nil {
		s.typing.Stop()
	}
}

// Notifier exposes the wake-up indexes (for metrics and tests).
func (s *Service) Notifier() *notifier.Notifier { return s.n }

// onRoomEvent takes a room_events notice from the bus; the follower hands
// it on to applyRoomEvent after whatever the bus lost before it.
func (s *Service) onRoomEvent(data []byte) {
	var n roomserver.Notice
	if err := json.Unmarshal(data, &n); err != nil {
		logging.From(context.Background()).WithError(err).Error("bad room event notice")
		return
	}
	s.follow.Deliver(context.Background(), &n)
}

// applyRoomEvent applies one position of the events stream, in order:
// caches, push evaluation, then the notifier's indexes and wake-ups.
func (s *Service) applyRoomEvent(ctx context.Context, np *roomserver.Notice) {
	n := *np
	if n.Skip {
		if s.opts.Push != nil {
			s.opts.Push.OnRoomEvent(ctx, &n)
		}
		s.n.Skipped(Pos{Events: n.Pos})
		return
	}
	s.relationsOnNotice(&n)

	if ce, err := render(&n.Event); err == nil {
		s.rendered.Put(n.EventID, ce)
		s.addRecent(n.RoomID, ce)
	} else {
		s.recent.Remove(n.RoomID) // the cache must not have a hole
	}
	if n.Redacts != "" {
		s.applyRedactionToCaches(n)
	}
	target, m := "", ""
	if n.Type == "m.room.member" && n.StateKey != nil {
		target, m = *n.StateKey, n.Membership
	}
	effect := notifier.UnreadNone
	switch {
	case n.Redacts != "":
		effect = notifier.UnreadRecount
	case notifier.CountsAsUnread(n.Type, n.StateKey):
		effect = notifier.UnreadCount
	}
	if target != "" {
		s.deviceLists.NoteMembership(n.RoomID, n.Pos)
	}
	if s.opts.Push != nil {
		s.opts.Push.OnRoomEvent(ctx, &n)
	}
	if slidingBumps(n.Type) {
		s.n.NoteBump(n.RoomID, n.Pos)
	}
	s.n.OnRoomEvent(n.RoomID, n.Pos, target, m, n.Sender, effect)
}

func (s *Service) applyRedactionToCaches(n roomserver.Notice) {
	old, ok := s.rendered.Peek(n.Redacts)
	if !ok {
		return
	}
	ev := roomserver.Event{Pos: old.pos, EventID: old.eventID, RoomID: old.roomID, Type: old.typ, StateKey: old.stateKey, Sender: old.sender,
		OriginTS: old.ts, DeviceID: old.device, TxnID: old.txnID, RedactedBy: n.EventID, Snapshot: old.snapshot, JSON: n.RedactedJSON}
	ce, err := render(&ev)
	if err != nil {
		s.rendered.Remove(n.Redacts)
		return
	}
	s.rendered.Put(n.Redacts, ce)
	if rr, ok := s.recent.Peek(old.roomID); ok {
		rr.replace(ce)
	}
}

// now is the clock for ages and presence.
var now = func() time.Time { return time.Now() }

func nowMS() int64 { return now().UnixMilli() }

// CatchUp waits, briefly, until this process's sync engine has seen every
// write acknowledged before the call, so that a read (of anyone) after a
// write returns what was written. It is what the bus latency costs a read:
// usually nothing, at most microseconds.
func (s *Service) CatchUp(ctx context.Context) {
	want := Pos{Events: s.rooms.Position(), Receipts: s.receiptSeq.Visible(), AccountData: s.users.AccountDataPosition(), Peeks: s.peekSeq.Visible()}
	if s.n.CaughtUp(want) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = s.n.WaitFor(ctx, want)
}
