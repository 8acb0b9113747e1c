package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/keyed"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/metrics"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/internal/stream"
	"github.com/haven-chat/haven/storage"
)

// publisher is the part of the bus the roomserver needs.
type publisher interface {
	Publish(topic string, data []byte) error
}

// ProfileSource gives the displayname and avatar that go into a user's
// membership events.
type ProfileSource interface {
	Profile(ctx context.Context, userID string) (displayname, avatarURL string, err error)
}

// AccountChecker tells whether a local account exists (for invites).
type AccountChecker interface {
	AccountExists(ctx context.Context, userID string) (bool, error)
	// IsGuest tells whether a local user is a guest, who may join only
	// rooms that allow guests.
	IsGuest(ctx context.Context, userID string) (bool, error)
}

// AliasNamespaces are the application services' alias namespaces
// (appservice.Service).
type AliasNamespaces interface {
	// MayCreateAlias refuses (M_EXCLUSIVE) an alias that an application
	// service holds exclusively, unless userID is that service's.
	MayCreateAlias(userID, alias string) error
	// QueryAlias asks the services with the alias in a namespace whether it
	// exists; true when one of them says so (and has created it).
	QueryAlias(ctx context.Context, alias string) bool
}

// DirectRooms keeps users' m.direct account data (userapi): after a room
// upgrade, the new room is direct for whoever had the old one as direct.
type DirectRooms interface {
	AddDirectRoom(ctx context.Context, userID, oldRoom, newRoom string) error
}

// Options configure a Service.
type Options struct {
	// Aliases, when set, reserves the application services' exclusive
	// alias namespaces and asks them about unknown aliases of theirs.
	Aliases        AliasNamespaces
	ServerName     string
	Key            serverkey.Key
	DefaultVersion string
	// RoomCacheSize bounds the rooms whose current state is kept in memory.
	RoomCacheSize int
	// Direct, when set, is told of room upgrades (upgrade.go).
	Direct DirectRooms
	// Fetcher, when set, fills gaps in a room's DAG from the server an
	// event came from (missing.go); the federation client implements it.
	Fetcher EventFetcher
	// Federation, when set, carries memberships across servers (remote.go).
	Federation Federation

	// Spaces, when set, asks other servers about the rooms of a space
	// this server is not in (hierarchy_remote.go).
	Spaces SpaceFetcher
}

// Service is the roomserver.
type Service struct {
	db         *storage.DB
	bus        publisher
	profiles   ProfileSource
	accounts   AccountChecker
	opts       Options
	serverName spec.ServerName

	locks   keyed.Mutex
	seq     *stream.Sequencer
	snapSeq atomic.Int64
	// histPos is the last position given to backfilled history: they go
	// down from -1, so no stream reader (all ask for positions above a
	// token) ever sees old history as new (backfill.go).
	histPos atomic.Int64
	// gaps bounds the gap fills per origin server (missing.go).
	gaps gapSlots
	// noBackfill remembers backward extremities no server gave history
	// for, so that readers paging there do not ask again at once.
	noBackfill *lru.Cache[string, time.Time]
	rooms      *lru.Cache[string, *room]
	snaps      *lru.Cache[int64, map[stateKey]string]
	// snapsByKey holds snapshots in the form readers use.
	snapsByKey *lru.Cache[int64, map[[2]string]string]
	pduCache   *lru.Cache[string, gomatrixserverlib.PDU]
	ix         *indexer
	// txns knows the recent transaction IDs of sending devices (txns.go).
	txns *txnIndex

	// remoteSpaces keeps other servers' answers about spaces for a
	// minute, so that the pages of one /hierarchy ask them once.
	remoteSpaces *lru.Cache[string, remoteSpace]
}

// room is the in-memory view of a room's current state, kept by the writer.
// Only read or changed while holding the room's lock.
type room struct {
	// mu guards the fields below for readers; the writer holds the room's
	// keyed lock and takes mu only to install a committed change.
	mu          sync.RWMutex
	id          string
	version     gomatrixserverlib.IRoomVersion
	state       map[stateKey]gomatrixserverlib.PDU
	snapshot    int64
	chainLen    int64
	extremities []string
	depth       int64
	// extTopo holds the extremities' topological depths (topoDepth), so
	// that a local event's place needs no query.
	extTopo map[string]int64
}

// New creates the roomserver, reading the stream positions from the database.
func New(ctx context.Context, db *storage.DB, bus publisher, profiles ProfileSource, accounts AccountChecker, opts Options) (*Service, error) {
	if opts.RoomCacheSize <= 0 {
		opts.RoomCacheSize = 500
	}
	if opts.DefaultVersion == "" {
		opts.DefaultVersion = "11"
	}
	last, err := maxEventPos(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("read events position: %w", err)
	}
	lastSnap, err := maxSnapshotID(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("read snapshot id: %w", err)
	}
	s := &Service{
		db: db, bus: bus, profiles: profiles, accounts: accounts, opts: opts,
		serverName: spec.ServerName(opts.ServerName),
		rooms:      lru.New[string, *room]("room_state", opts.RoomCacheSize),
		snaps:      lru.New[int64, map[stateKey]string]("state_snapshots", 512),
		snapsByKey: lru.New[int64, map[[2]string]string]("state_snapshots_read", 4096),
		pduCache:   lru.New[string, gomatrixserverlib.PDU]("state_events", 5000),
		txns:       newTxnIndex(20000),
		noBackfill: lru.New[string, time.Time]("backfill_misses", 1024),
	}
	s.remoteSpaces = lru.New[string, remoteSpace]("remote_spaces", 1024)
	// Above any position handed out before a restore (storage.StreamFloor).
	floor, err := storage.StreamFloor(ctx, db, storage.StreamEvents)
	if err != nil {
		return nil, err
	}
	s.seq = stream.New(max(last, floor), s.publish)
	s.snapSeq.Store(lastSnap)
	var minPos int64
	if err := db.QueryRow(ctx, `SELECT COALESCE(MIN(pos), 0) FROM events`).Scan(&minPos); err != nil {
		return nil, fmt.Errorf("read history position: %w", err)
	}
	s.histPos.Store(min(minPos, 0))
	s.ix = newIndexer(db, s.Position)
	return s, nil
}

// Close stops the search indexer (what it has not indexed yet, the next
// start does).
func (s *Service) Close() { s.ix.close() }

// FlushSearchIndex indexes every event committed so far for search.
func (s *Service) FlushSearchIndex(ctx context.Context) error {
	return s.ix.flush(ctx, s.Position())
}

// Position is the highest visible events-stream position.
func (s *Service) Position() int64 { return s.seq.Visible() }

// DB is the database the roomserver writes (readers share its tables).
func (s *Service) DB() *storage.DB { return s.db }

// ServerName is this server's name.
func (s *Service) ServerName() string { return s.opts.ServerName }

func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// loadRoom returns the room's in-memory state, loading it if needed. The
// caller must hold the room's lock.
func (s *Service) loadRoom(ctx context.Context, roomID string) (*room, error) {
	if r, ok := s.rooms.Get(roomID); ok {
		return r, nil
	}
	row, err := selectRoom(ctx, s.db, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, merr.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return nil, err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(row.version))
	if err != nil {
		return nil, fmt.Errorf("room %s has unknown version %s", roomID, row.version)
	}
	ids, err := selectCurrentState(ctx, s.db, roomID)
	if err != nil {
		return nil, err
	}
	pdus, err := s.loadPDUs(ctx, verImpl, idsOf(ids))
	if err != nil {
		return nil, err
	}
	state := make(map[stateKey]gomatrixserverlib.PDU, len(ids))
	for k, id := range ids {
		if p, ok := pdus[id]; ok {
			state[k] = p
		}
	}
	ext, err := selectExtremities(ctx, s.db, roomID)
	if err != nil {
		return nil, err
	}
	extEvents, err := EventsByID(ctx, s.db, ext)
	if err != nil {
		return nil, err
	}
	depth := row.depth
	extTopo := make(map[string]int64, len(extEvents))
	for _, e := range extEvents {
		depth = max(depth, e.Depth)
		extTopo[e.EventID] = e.Topo
	}
	_, chainLen, err := selectSnapshotMeta(ctx, s.db, row.snapshot)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	r := &room{id: roomID, version: verImpl, state: state, snapshot: row.snapshot, chainLen: chainLen, extremities: ext, depth: depth, extTopo: extTopo}
	s.rooms.Put(roomID, r)
	return r, nil
}

func idsOf(m map[stateKey]string) []string {
	out := make([]string, 0, len(m))
	for _, id := range m {
		out = append(out, id)
	}
	return out
}

// loadPDUs parses stored events into PDUs, through a cache.
func (s *Service) loadPDUs(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, ids []string) (map[string]gomatrixserverlib.PDU, error) {
	out := make(map[string]gomatrixserverlib.PDU, len(ids))
	var missing []string
	for _, id := range ids {
		if p, ok := s.pduCache.Get(id); ok {
			out[id] = p
		} else {
			missing = append(missing, id)
		}
	}
	for len(missing) > 0 {
		n := min(len(missing), 500)
		evs, err := EventsByID(ctx, s.db, missing[:n])
		if err != nil {
			return nil, err
		}
		if len(evs) < n {
			// The auth rules and state may use events outside the
			// timeline too (never rejected ones).
			more, err := outlierEvents(ctx, s.db, verImpl, missing[:n])
			if err != nil {
				return nil, err
			}
			evs = append(evs, more...)
		}
		missing = missing[n:]
		for _, e := range evs {
			p, err := verImpl.NewEventFromTrustedJSONWithEventID(e.EventID, e.JSON, e.RedactedBy != "")
			if err != nil {
				return nil, fmt.Errorf("parse stored event %s: %w", e.EventID, err)
			}
			s.pduCache.Put(e.EventID, p)
			out[e.EventID] = p
		}
	}
	return out, nil
}

// stateProvider answers gomatrixserverlib's auth questions from a state map.
type stateProvider map[stateKey]gomatrixserverlib.PDU

func (p stateProvider) Create() (gomatrixserverlib.PDU, error) {
	return p[stateKey{spec.MRoomCreate, ""}], nil
}
func (p stateProvider) JoinRules() (gomatrixserverlib.PDU, error) {
	return p[stateKey{spec.MRoomJoinRules, ""}], nil
}
func (p stateProvider) PowerLevels() (gomatrixserverlib.PDU, error) {
	return p[stateKey{spec.MRoomPowerLevels, ""}], nil
}
func (p stateProvider) Member(k spec.SenderID) (gomatrixserverlib.PDU, error) {
	return p[stateKey{spec.MRoomMember, string(k)}], nil
}
func (p stateProvider) ThirdPartyInvite(k string) (gomatrixserverlib.PDU, error) {
	return p[stateKey{spec.MRoomThirdPartyInvite, k}], nil
}
func (p stateProvider) Valid() bool { return true }

// eventMeta is what a local event carries besides its JSON.
type eventMeta struct {
	deviceID string
	txnID    string
	// unsigned fields to add before storing (invite_room_state)
	unsigned map[string]any
}

// mapBuildError turns gomatrixserverlib build errors into Matrix errors.
func mapBuildError(err error) error {
	var ve gomatrixserverlib.EventValidationError
	if errors.As(err, &ve) && ve.Code == gomatrixserverlib.EventValidationTooLarge {
		return merr.TooLarge("%s", ve.Message)
	}
	if errors.As(err, &ve) {
		return merr.BadJSON("%s", ve.Message)
	}
	return merr.BadJSON("Invalid event: %s", err.Error())
}

const maxPrevEvents = 20

// draft is a room as it will be after some not yet committed events: built
// events see the state that the events before them in the same batch made.
type draft struct {
	r           *room
	state       map[stateKey]gomatrixserverlib.PDU
	copied      bool
	extremities []string
	depth       int64
	events      []pending
	// base is the state before the first event when it is not the room's
	// current state: an event from another server, or one on a branch of
	// the DAG (InputEvent). nil: the room's current state.
	base map[stateKey]gomatrixserverlib.PDU
	// promoted are events of the draft stored as outliers until now: the
	// write moves them into the timeline.
	promoted []string
	// current is the room's state after the write when it is not the
	// state after the last event: the resolution of the forward
	// extremities' states where branches meet. nil: the state after the
	// last event.
	current map[stateKey]gomatrixserverlib.PDU
}

type pending struct {
	pdu  gomatrixserverlib.PDU
	meta eventMeta
}

func newDraft(r *room) *draft {
	return &draft{r: r, state: r.state, extremities: r.extremities, depth: r.depth}
}

// add builds, signs and authorises an event on top of the draft. The caller
// holds the room's lock.
func (s *Service) add(d *draft, proto *gomatrixserverlib.ProtoEvent, meta eventMeta) (gomatrixserverlib.PDU, error) {
	if proto.Type != spec.MRoomCreate || !d.r.version.DomainlessRoomIDs() {
		proto.RoomID = d.r.id
	}
	prev := d.extremities
	if len(prev) > maxPrevEvents {
		prev = prev[len(prev)-maxPrevEvents:]
	}
	proto.PrevEvents = append([]string{}, prev...)
	proto.Depth = d.depth + 1
	if proto.Content == nil {
		proto.Content = spec.RawJSON("{}")
	}
	b := d.r.version.NewEventBuilderFromProtoEvent(proto)
	if proto.Type != spec.MRoomCreate {
		if err := b.AddAuthEvents(stateProvider(d.state)); err != nil {
			return nil, merr.BadJSON("Invalid event: %s", err.Error())
		}
	} else {
		b.AuthEvents = []string{}
	}
	pdu, err := b.Build(nowTime(), s.serverName, s.opts.Key.ID, s.opts.Key.Private)
	if err != nil {
		return nil, mapBuildError(err)
	}
	if err := gomatrixserverlib.Allowed(pdu, stateProvider(d.state), userIDForSender); err != nil {
		return nil, merr.Forbidden("%s", authMessage(err))
	}
	d.push(pdu, meta)
	return pdu, nil
}

// push appends an authorised event to the draft: it becomes the only
// forward extremity and, if it is state, part of the draft's state.
func (d *draft) push(pdu gomatrixserverlib.PDU, meta eventMeta) {
	if sk := pdu.StateKey(); sk != nil {
		if !d.copied {
			st := make(map[stateKey]gomatrixserverlib.PDU, len(d.state)+1)
			for k, v := range d.state {
				st[k] = v
			}
			d.state, d.copied = st, true
		}
		d.state[stateKey{pdu.Type(), *sk}] = pdu
	}
	d.events = append(d.events, pending{pdu: pdu, meta: meta})
	d.extremities = []string{pdu.EventID()}
	d.depth = pdu.Depth()
}

func authMessage(err error) string {
	var na *gomatrixserverlib.NotAllowed
	if errors.As(err, &na) {
		return na.Message
	}
	return err.Error()
}

// commit writes the draft's events in one transaction (creating the room row
// first when newRoom is set), then installs the new state in memory and
// publishes the events in stream order. The caller holds the room's lock.
func (s *Service) commit(ctx context.Context, d *draft, newRoom *roomRow, extra func(context.Context, *storage.Tx) error) ([]Event, error) {
	r := d.r
	// State before each event, as the room evolves through the batch.
	cur := r.state
	snapshot, chainLen := r.snapshot, r.chainLen
	var snaps []snapWrite
	// One snapshot stands for a whole state: a difference from its parent
	// (at most 32 deep, then whole again).
	// delta, when known, is target's difference from cur (one event's key).
	stateSnapshot := func(target map[stateKey]gomatrixserverlib.PDU, delta map[stateKey]string) {
		sw := s.newSnapshot(cur, snapshot, chainLen, target, delta)
		snaps = append(snaps, sw)
		cur, snapshot, chainLen = target, sw.id, sw.chainLen
	}
	if d.base != nil && !sameState(d.base, cur) {
		stateSnapshot(d.base, nil)
	}
	events := make([]Event, len(d.events))
	for i, pe := range d.events {
		pdu := pe.pdu
		sk := pdu.StateKey()
		unsigned := map[string]any{}
		for k, v := range pe.meta.unsigned {
			unsigned[k] = v
		}
		if sk != nil {
			if replaced := cur[stateKey{pdu.Type(), *sk}]; replaced != nil {
				unsigned["prev_content"] = json.RawMessage(replaced.Content())
				unsigned["prev_sender"] = string(replaced.SenderID())
				unsigned["replaces_state"] = replaced.EventID()
			}
		}
		// The stored event carries its unsigned data; the copy kept in
		// memory for the auth rules does not need it.
		stored := pdu
		if len(unsigned) > 0 {
			withUnsigned, err := pdu.SetUnsigned(unsigned)
			if err != nil {
				return nil, fmt.Errorf("set unsigned: %w", err)
			}
			stored = withUnsigned
		}
		ev := eventFromPDU(stored)
		ev.DeviceID, ev.TxnID = pe.meta.deviceID, pe.meta.txnID
		ev.Snapshot = snapshot
		if sk != nil {
			next := make(map[stateKey]gomatrixserverlib.PDU, len(cur)+1)
			for k, v := range cur {
				next[k] = v
			}
			next[stateKey{pdu.Type(), *sk}] = pdu
			stateSnapshot(next, map[stateKey]string{{pdu.Type(), *sk}: pdu.EventID()})
		}
		events[i] = ev
	}
	if d.current != nil && !sameState(d.current, cur) {
		stateSnapshot(d.current, nil)
	}
	// The room's current state changes where it differs from before the
	// write: in the linear case only at the batch's state events (and
	// nothing is removed), so the whole state is compared only where the
	// write starts elsewhere or ends in a resolved state.
	changed := map[stateKey]bool{}
	var removed []stateKey
	if d.base == nil && d.current == nil {
		for _, pe := range d.events {
			if sk := pe.pdu.StateKey(); sk != nil {
				changed[stateKey{pe.pdu.Type(), *sk}] = true
			}
		}
	} else {
		for k, p := range cur {
			if old := r.state[k]; old == nil || old.EventID() != p.EventID() {
				changed[k] = true
			}
		}
		for k := range r.state {
			if cur[k] == nil {
				removed = append(removed, k)
			}
		}
	}
	// Topological depths: the batch's events build on each other and the
	// room's extremities are known in memory; anything else is read.
	prevs := make([][]string, len(d.events))
	var read map[string]int64
	topoOf := func(id string) (int64, bool) {
		for j := range events {
			if events[j].EventID == id && events[j].Topo != 0 { // set, never 0
				return events[j].Topo, true
			}
		}
		if t, ok := r.extTopo[id]; ok {
			return t, true
		}
		t, ok := read[id]
		return t, ok
	}
	var ask []string
	for i, pe := range d.events {
		prevs[i] = pe.pdu.PrevEventIDs()
		for _, p := range prevs[i] {
			if _, ok := r.extTopo[p]; !ok && !slices.ContainsFunc(events[:i], func(e Event) bool { return e.EventID == p }) {
				ask = append(ask, p)
			}
		}
	}
	if len(ask) > 0 {
		read = make(map[string]int64, len(ask))
		if err := selectTopos(ctx, s.db, ask, read); err != nil {
			return nil, err
		}
	}
	for i, pe := range d.events {
		events[i].Topo = topoDepth(pe.pdu.Depth(), prevs[i], topoOf)
	}
	redactions := make([]*Notice, len(events))
	taken := false // positions were taken: a failure must skip them
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		// A transaction ID used before answers with its event before a
		// position is taken (txns.go).
		for i := range events {
			if ev := &events[i]; ev.TxnID != "" {
				id, err := s.txns.lookup(ctx, tx, ev.Sender, ev.DeviceID, ev.RoomID, ev.TxnID)
				if err != nil {
					return err
				}
				if id != "" {
					return &txnTaken{eventID: id}
				}
			}
		}
		// Positions are taken inside the transaction: on SQLite, where
		// writes go one after another, they follow the commit order.
		first := s.seq.NextN(len(events))
		taken = true
		for i := range events {
			events[i].Pos = first + int64(i)
		}
		if newRoom != nil {
			if _, err := tx.Exec(ctx, `INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1,$2,$3,$4)`,
				r.id, newRoom.version, events[0].Sender, events[0].OriginTS); err != nil {
				if storage.IsUniqueViolation(err) {
					return merr.RoomInUse("Room %s already exists", r.id)
				}
				return fmt.Errorf("insert room %s: %w", r.id, err)
			}
		}
		for _, sw := range snaps {
			if err := insertSnapshot(ctx, tx, sw.id, r.id, sw.parent, sw.chainLen, sw.entries); err != nil {
				return err
			}
		}
		if err := updateRoomState(ctx, tx, r.id, cur, changed, removed, events); err != nil {
			return err
		}
		for i := range events {
			ev := &events[i]
			if err := insertEvent(ctx, tx, ev); err != nil {
				return err
			}
			if ev.Type == spec.MRoomMember && ev.StateKey != nil && (ev.Membership == spec.Join || ev.Membership == spec.Invite || ev.Membership == spec.Knock) {
				// Coming back un-forgets the room: a later leave shows it again.
				if _, err := tx.Exec(ctx, `DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`, *ev.StateKey, r.id); err != nil {
					return fmt.Errorf("unforget %s: %w", r.id, err)
				}
			}
			if ev.Type == spec.MRoomRedaction {
				n, err := s.applyRedaction(ctx, tx, r, d.events[i].pdu)
				if err != nil {
					return err
				}
				redactions[i] = n
			}
		}
		if err := insertPrevEvents(ctx, tx, r.id, events, prevs); err != nil {
			return err
		}
		for _, id := range d.promoted {
			if _, err := tx.Exec(ctx, `DELETE FROM event_outliers WHERE event_id = $1`, id); err != nil {
				return fmt.Errorf("promote outlier %s: %w", id, err)
			}
		}
		if extra != nil {
			if err := extra(ctx, tx); err != nil {
				return err
			}
		}
		// In the common linear case the new event is the room's only
		// forward extremity: one UPDATE of the one row there is.
		if newRoom == nil && len(r.extremities) == 1 && len(d.extremities) == 1 {
			if _, err := tx.Exec(ctx, `UPDATE room_extremities SET event_id = $1 WHERE room_id = $2`, d.extremities[0], r.id); err != nil {
				return fmt.Errorf("set extremity of %s: %w", r.id, err)
			}
		} else {
			if _, err := tx.Exec(ctx, `DELETE FROM room_extremities WHERE room_id = $1`, r.id); err != nil {
				return fmt.Errorf("clear extremities of %s: %w", r.id, err)
			}
			for _, id := range d.extremities {
				if _, err := tx.Exec(ctx, `INSERT INTO room_extremities (room_id, event_id) VALUES ($1, $2)`, r.id, id); err != nil {
					return fmt.Errorf("set extremity of %s: %w", r.id, err)
				}
			}
		}
		// The room row follows the state; its depth is read back from the
		// extremities when the room is loaded.
		if snapshot != r.snapshot {
			if _, err := tx.Exec(ctx, `UPDATE rooms SET snapshot_id = $1, depth = $2 WHERE room_id = $3`, snapshot, d.depth, r.id); err != nil {
				return fmt.Errorf("update room %s: %w", r.id, err)
			}
		}
		return nil
	})
	if err != nil {
		if taken {
			for _, ev := range events {
				s.seq.Skip(ev.Pos)
			}
		}
		// Nothing of the draft reached the database; the cached room is untouched.
		return nil, err
	}
	metrics.EventsPersisted.Add(float64(len(events)))
	s.txns.committed(events)
	if len(snaps) > 0 {
		// Readers ask for the room's newest snapshot first: have it ready.
		s.snapsByKey.Put(snapshot, readerState(cur))
	}
	r.mu.Lock()
	r.state = cur
	r.snapshot, r.chainLen = snapshot, chainLen
	r.extremities = d.extremities
	r.depth = d.depth
	extTopo := make(map[string]int64, len(d.extremities))
	for _, id := range d.extremities {
		if t, ok := topoOf(id); ok {
			extTopo[id] = t
		}
	}
	r.extTopo = extTopo
	r.mu.Unlock()
	for _, pe := range d.events {
		if pe.pdu.StateKey() != nil {
			s.pduCache.Put(pe.pdu.EventID(), pe.pdu)
		}
	}
	if newRoom != nil {
		s.rooms.Put(r.id, r)
	}
	for i, ev := range events {
		notice := Notice{Event: ev}
		if n := redactions[i]; n != nil {
			notice.Redacts, notice.RedactedJSON = n.Redacts, n.RedactedJSON
			s.afterRedaction(r, n)
		}
		s.seq.Done(ev.Pos, notice)
	}
	return events, nil
}

// publish tells the bus of every visible position: a committed event's
// notice, or the explicit skip of a position whose write failed, so that
// readers see an unbroken sequence and never wait for a position that will
// not come.
func (s *Service) publish(pos int64, payload any) {
	n, ok := payload.(Notice)
	if !ok {
		n = Notice{Event: Event{Pos: pos}, Skip: true}
	}
	data, err := json.Marshal(n)
	if err != nil {
		logging.From(context.Background()).WithError(err).Error("encode room event notice")
		return
	}
	if err := s.bus.Publish(Topic, data); err != nil {
		logging.From(context.Background()).WithError(err).WithField("event_id", n.EventID).Error("publish room event")
	}
	s.ix.kick()
}

// snapWrite is a state snapshot to store: whole (parent 0) or the entries
// that differ from its parent's.
type snapWrite struct {
	id, parent, chainLen int64
	entries              map[stateKey]string
}

// newSnapshot is the snapshot to store for target: the difference from
// the state from (snapshot parent, chainLen deep) — delta when the caller
// knows it — or, when that cannot be or the chain is 32 deep, target whole.
func (s *Service) newSnapshot(from map[stateKey]gomatrixserverlib.PDU, parent, chainLen int64, target map[stateKey]gomatrixserverlib.PDU, delta map[stateKey]string) snapWrite {
	if delta == nil {
		delta = stateDelta(from, target)
	}
	sw := snapWrite{id: s.snapSeq.Add(1), entries: delta}
	if sw.entries == nil || chainLen >= 32 || parent == 0 {
		sw.entries = make(map[stateKey]string, len(target))
		for k, p := range target {
			sw.entries[k] = p.EventID()
		}
	} else {
		sw.parent, sw.chainLen = parent, chainLen+1
	}
	return sw
}

// stateDelta is what to store for target as a difference from from: the
// entries whose event differs; nil when target lacks a key of from (a
// snapshot only adds and replaces, so it must then be whole).
func stateDelta(from, target map[stateKey]gomatrixserverlib.PDU) map[stateKey]string {
	for k := range from {
		if target[k] == nil {
			return nil
		}
	}
	out := map[stateKey]string{}
	for k, p := range target {
		if q := from[k]; q == nil || q.EventID() != p.EventID() {
			out[k] = p.EventID()
		}
	}
	return out
}

// updateRoomState writes the room's current state where it changed: each
// key at the position of the batch's event that set it (else the batch's
// last), and drops removed keys.
func updateRoomState(ctx context.Context, tx *storage.Tx, roomID string, cur map[stateKey]gomatrixserverlib.PDU, changed map[stateKey]bool, removed []stateKey, events []Event) error {
	posOf := make(map[string]int64, len(events))
	for _, ev := range events {
		posOf[ev.EventID] = ev.Pos
	}
	last := events[len(events)-1].Pos
	for k := range changed {
		p := cur[k]
		if p == nil {
			continue
		}
		pos, ok := posOf[p.EventID()]
		if !ok {
			pos = last
		}
		var membership any
		if p.Type() == spec.MRoomMember {
			if m, err := p.Membership(); err == nil {
				membership = m
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO room_state (room_id, type, state_key, event_id, pos, membership) VALUES ($1,$2,$3,$4,$5,$6)
ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id, pos = excluded.pos, membership = excluded.membership`,
			roomID, k.typ, k.key, p.EventID(), pos, membership); err != nil {
			return fmt.Errorf("update state of %s: %w", roomID, err)
		}
	}
	for _, k := range removed {
		if _, err := tx.Exec(ctx, `DELETE FROM room_state WHERE room_id = $1 AND type = $2 AND state_key = $3`, roomID, k.typ, k.key); err != nil {
			return fmt.Errorf("drop state of %s: %w", roomID, err)
		}
	}
	return nil
}

// readerState is a state map in the form readers use.
func readerState(m map[stateKey]gomatrixserverlib.PDU) map[[2]string]string {
	out := make(map[[2]string]string, len(m))
	for k, p := range m {
		out[[2]string{k.typ, k.key}] = p.EventID()
	}
	return out
}

// eventFromPDU fills the indexed columns of an event from its PDU.
func eventFromPDU(p gomatrixserverlib.PDU) Event {
	ev := Event{
		EventID:  p.EventID(),
		RoomID:   p.RoomID().String(),
		Type:     p.Type(),
		StateKey: p.StateKey(),
		Sender:   string(p.SenderID()),
		Depth:    p.Depth(),
		OriginTS: int64(p.OriginServerTS()),
		JSON:     p.JSON(),
	}
	if p.Type() == spec.MRoomMember {
		ev.Membership, _ = p.Membership()
	}
	var c struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(p.Content(), &c) == nil && c.RelatesTo != nil && c.RelatesTo.EventID != "" {
		ev.RelatesTo, ev.RelType = c.RelatesTo.EventID, c.RelatesTo.RelType
	}
	return ev
}

// checkStorable refuses (M_BAD_JSON) an event from another server whose
// fields that go into columns are not text both databases keep (a NUL).
func checkStorable(p gomatrixserverlib.PDU) error {
	ev := eventFromPDU(p)
	fields := []string{ev.Type, ev.Sender, ev.Membership, ev.RelatesTo, ev.RelType, redactsOf(p)}
	if ev.StateKey != nil {
		fields = append(fields, *ev.StateKey)
	}
	for _, f := range fields {
		if !storage.StorableText(f) {
			return merr.BadJSON("Event %s holds text that cannot be stored", p.EventID())
		}
	}
	return nil
}

// sortedStateKeys returns the keys of a state map in a stable order.
func sortedStateKeys[V any](m map[stateKey]V) []stateKey {
	keys := make([]stateKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].typ != keys[j].typ {
			return keys[i].typ < keys[j].typ
		}
		return keys[i].key < keys[j].key
	})
	return keys
}
