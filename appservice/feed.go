package appservice

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/backoff"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/syncapi"
	"github.com/haven-chat/haven/userapi/keys"
)

// The feed: one goroutine follows the events stream (and, for services
// that want them, typing, receipts, presence and to-device messages),
// decides which services each item concerns, gathers what arrived together
// into one transaction per service, queues it in the service's JetStream
// queue and then stores the services' positions. A service's position is
// stored only after every event up to it is queued, so a restart neither
// loses events nor, beyond a transaction queued twice, repeats them.

// Limits of one queued transaction: Synapse's 100 events, and a size
// below NATS's default largest message (1 MiB).
const (
	maxTxnEvents = 100
	maxTxnBytes  = 768 << 10
)

// queuedTxn is a transaction as it waits in a service's queue.
type queuedTxn struct {
	TxnID     string            `json:"txn_id"`
	Events    []json.RawMessage `json:"events"`
	Ephemeral []json.RawMessage `json:"ephemeral,omitempty"`
	ToDevice  []json.RawMessage `json:"to_device,omitempty"`
	// DeviceLists are the users whose devices changed (MSC3202).
	DeviceLists []string `json:"device_lists,omitempty"`
}

// pending is what a service is to get in the next transaction.
type pending struct {
	events    []json.RawMessage
	positions []int64 // the events' positions
	ephemeral []json.RawMessage
	typingAt  map[string]int // room → index of its m.typing in ephemeral
	toDevice  []json.RawMessage
	acks      []toDeviceAck
	// deviceLists are the users whose devices changed (MSC3202).
	deviceLists []string
}

type toDeviceAck struct {
	userID, deviceID string
	pos              int64
}

func (p *pending) empty() bool {
	return len(p.events) == 0 && len(p.ephemeral) == 0 && len(p.toDevice) == 0 && len(p.deviceLists) == 0
}

type feedItem struct {
	topic string
	data  []byte
}

type aliasEntry struct {
	aliases []string
	at      time.Time
}

type feed struct {
	s      *Service
	follow *roomserver.Follower
	in     chan feedItem
	// targets are the services with a URL, which get transactions.
	targets []*Registration
	pos     map[string]int64 // stored position of each target
	last    int64            // last events position applied
	// members: room → the joined users some service controls.
	members map[string]map[string]struct{}
	aliases *lru.Cache[string, aliasEntry]
	// typing: room → user → expiry (unix ms), for the m.typing events.
	typing    map[string]map[string]int64
	pend      map[string]*pending
	lastWrite time.Time
	epoch     string
	seq       int64

	wantEphemeral, wantToDevice, wantDeviceLists bool
}

func newFeed(s *Service) *feed {
	f := &feed{s: s, in: make(chan feedItem, 4096), pos: map[string]int64{}, members: map[string]map[string]struct{}{},
		aliases: lru.New[string, aliasEntry]("appservice_room_aliases", 2000), typing: map[string]map[string]int64{},
		pend: map[string]*pending{}, epoch: strconv.FormatInt(time.Now().UnixMilli(), 36)}
	for _, r := range s.reg.regs {
		if r.URL == "" {
			continue
		}
		f.targets = append(f.targets, r)
		f.wantEphemeral = f.wantEphemeral || r.Ephemeral
		f.wantToDevice = f.wantToDevice || r.Ephemeral || r.MSC3202
		f.wantDeviceLists = f.wantDeviceLists || r.MSC3202
	}
	return f
}

// start subscribes, loads the positions and the memberships, catches up
// with the events committed since the lowest stored position, and starts
// the feed's goroutine.
func (s *Service) start(ctx context.Context) error {
	js, err := jetstream.New(s.d.Bus.Conn())
	if err != nil {
		return fmt.Errorf("appservice queues: %w", err)
	}
	s.js = js
	f := newFeed(s)
	s.feed = f
	for _, r := range f.targets {
		snd, err := newSender(ctx, s, r)
		if err != nil {
			return err
		}
		s.senders[r.ID] = snd
	}
	if len(f.targets) == 0 {
		return nil
	}
	topics := []string{roomserver.Topic}
	if f.wantEphemeral {
		topics = append(topics, syncapi.TopicTyping, syncapi.TopicReceipts, syncapi.TopicPresence)
	}
	if f.wantToDevice && s.d.Keys != nil {
		topics = append(topics, keys.TopicToDevice)
	}
	if f.wantDeviceLists {
		topics = append(topics, keys.TopicDeviceLists)
	}
	// Subscribe before reading the positions: what commits meanwhile is
	// queued and, if already read, skipped by the follower.
	for _, t := range topics {
		topic := t
		unsub, err := s.d.Bus.Subscribe(topic, func(data []byte) {
			select {
			case f.in <- feedItem{topic: topic, data: data}:
			case <-s.stop:
			}
		})
		if err != nil {
			return err
		}
		s.unsubs = append(s.unsubs, unsub)
	}
	cur := s.d.Rooms.Position()
	if err := f.loadPositions(ctx, cur); err != nil {
		return err
	}
	if err := s.d.Rooms.AllRoomMemberships(ctx, func(roomID, userID, m string, _ int64) {
		if m == "join" {
			f.noteMember(roomID, userID, true)
		}
	}); err != nil {
		return fmt.Errorf("appservice: memberships: %w", err)
	}
	if err := f.catchUp(ctx, cur); err != nil {
		return err
	}
	f.follow = roomserver.NewFollower(s.d.DB, cur, f.apply)
	s.wg.Add(1 + len(s.senders))
	go f.run()
	for _, snd := range s.senders {
		go snd.run()
	}
	return nil
}

// loadPositions reads the stored positions; a service seen for the first
// time starts from now, not from the beginning of history.
func (f *feed) loadPositions(ctx context.Context, cur int64) error {
	rows, err := f.s.d.DB.Query(ctx, `SELECT service_id, pos FROM appservice_positions`)
	if err != nil {
		return fmt.Errorf("appservice positions: %w", err)
	}
	stored := map[string]int64{}
	for rows.Next() {
		var id string
		var p int64
		if err := rows.Scan(&id, &p); err != nil {
			rows.Close()
			return fmt.Errorf("appservice positions: %w", err)
		}
		stored[id] = p
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("appservice positions: %w", err)
	}
	f.last = cur
	for _, r := range f.targets {
		p, ok := stored[r.ID]
		if !ok {
			p = cur
			if _, err := f.s.d.DB.Exec(ctx, upsertPosition, r.ID, p); err != nil {
				return fmt.Errorf("appservice %s: store position: %w", r.ID, err)
			}
		}
		f.pos[r.ID] = p
		f.last = min(f.last, p)
	}
	return nil
}

const upsertPosition = `INSERT INTO appservice_positions (service_id, pos) VALUES ($1, $2)
ON CONFLICT (service_id) DO UPDATE SET pos = excluded.pos`

// catchUp hands on the events after the lowest stored position up to cur,
// read from the database.
func (f *feed) catchUp(ctx context.Context, cur int64) error {
	after := f.last
	for after < cur {
		ns, err := roomserver.NoticesAfter(ctx, f.s.d.DB, after, cur, 500)
		if err != nil {
			return fmt.Errorf("appservice: events after %d: %w", after, err)
		}
		for i := range ns {
			f.apply(ctx, &ns[i])
		}
		if len(ns) == 0 {
			break
		}
		after = ns[len(ns)-1].Pos
		if !f.flush(ctx, true) {
			return fmt.Errorf("appservice: stopped while catching up")
		}
	}
	f.last = cur
	f.flush(ctx, true)
	return nil
}

// run is the feed's goroutine: it takes what the bus delivers, in order,
// and flushes after each burst.
func (f *feed) run() {
	defer f.s.wg.Done()
	ctx := logging.With(context.Background(), logging.From(context.Background()).WithField("component", "appservice"))
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case it := <-f.in:
			f.take(ctx, it)
		case <-tick.C:
		case <-f.s.stop:
			return
		}
		// Whatever else is waiting joins the same transactions.
		for n := 0; n < 1000; n++ {
			select {
			case it := <-f.in:
				f.take(ctx, it)
				continue
			default:
			}
			break
		}
		if !f.flush(ctx, false) {
			return
		}
	}
}

func (f *feed) take(ctx context.Context, it feedItem) {
	switch it.topic {
	case roomserver.Topic:
		var n roomserver.Notice
		if err := json.Unmarshal(it.data, &n); err != nil {
			logging.From(ctx).WithError(err).Error("appservice: bad room event notice")
			return
		}
		f.follow.Deliver(ctx, &n)
	case syncapi.TopicTyping:
		f.onTyping(ctx, it.data)
	case syncapi.TopicReceipts:
		f.onReceipt(ctx, it.data)
	case syncapi.TopicPresence:
		f.onPresence(ctx, it.data)
	case keys.TopicToDevice:
		f.onToDevice(ctx, it.data)
	case keys.TopicDeviceLists:
		f.onDeviceList(ctx, it.data)
	}
}

// controlled tells whether some service controls the user.
func (f *feed) controlled(userID string) bool {
	for _, r := range f.s.reg.regs {
		if r.ControlsUser(userID) {
			return true
		}
	}
	return false
}

func (f *feed) noteMember(roomID, userID string, joined bool) {
	if !f.controlled(userID) {
		return
	}
	m := f.members[roomID]
	if joined {
		if m == nil {
			m = map[string]struct{}{}
			f.members[roomID] = m
		}
		m[userID] = struct{}{}
		return
	}
	delete(m, userID)
	if len(m) == 0 {
		delete(f.members, roomID)
	}
}

// aliasesOf gives a room's aliases, read at most every ten seconds (a new
// alias reaches the services' interest within that time).
func (f *feed) aliasesOf(ctx context.Context, roomID string) []string {
	if e, ok := f.aliases.Get(roomID); ok && time.Since(e.at) < 10*time.Second {
		return e.aliases
	}
	as, err := f.s.d.Rooms.AliasesOf(ctx, roomID)
	if err != nil {
		logging.From(ctx).WithError(err).WithField("room_id", roomID).Warn("appservice: aliases of a room")
		return nil
	}
	f.aliases.Put(roomID, aliasEntry{aliases: as, at: time.Now()})
	return as
}

// interestedInRoom: the room is in the service's room namespace, one of
// its users is joined, or it has an alias of the service's namespace.
func (f *feed) interestedInRoom(ctx context.Context, r *Registration, roomID string) bool {
	if r.InRoomNamespace(roomID) {
		return true
	}
	for u := range f.members[roomID] {
		if r.ControlsUser(u) {
			return true
		}
	}
	if len(r.Aliases) > 0 {
		for _, a := range f.aliasesOf(ctx, roomID) {
			if r.InAliasNamespace(a) {
				return true
			}
		}
	}
	return false
}

// interested is the spec's interest in an event: sent by or about (the
// target of a membership event: invites) one of the service's users, or in
// a room it is interested in.
func (f *feed) interested(ctx context.Context, r *Registration, n *roomserver.Notice) bool {
	if r.ControlsUser(n.Sender) {
		return true
	}
	if n.Type == "m.room.member" && n.StateKey != nil && r.ControlsUser(*n.StateKey) {
		return true
	}
	return f.interestedInRoom(ctx, r, n.RoomID)
}

func (f *feed) pendingOf(id string) *pending {
	p := f.pend[id]
	if p == nil {
		p = &pending{}
		f.pend[id] = p
	}
	return p
}

// apply takes one position of the events stream, in order.
func (f *feed) apply(ctx context.Context, n *roomserver.Notice) {
	if n.Pos > f.last {
		f.last = n.Pos
	}
	if n.Skip {
		return
	}
	var rendered json.RawMessage
	for _, r := range f.targets {
		if n.Pos <= f.pos[r.ID] || !f.interested(ctx, r, n) {
			continue
		}
		if rendered == nil {
			var err error
			if rendered, err = clientEvent(&n.Event); err != nil {
				logging.From(ctx).WithError(err).WithField("event_id", n.EventID).Error("appservice: event not sent")
				return
			}
		}
		p := f.pendingOf(r.ID)
		p.events = append(p.events, rendered)
		p.positions = append(p.positions, n.Pos)
	}
	if n.Type == "m.room.member" && n.StateKey != nil {
		f.noteMember(n.RoomID, *n.StateKey, n.Membership == "join")
	}
}

// flush queues the pending transactions and then stores the positions:
// always when a transaction was queued (or force), else at most every two
// seconds. It reports false when the service stopped before the queueing
// succeeded (nothing is stored then: the next start sends it again).
func (f *feed) flush(ctx context.Context, force bool) bool {
	queued := false
	for _, r := range f.targets {
		p := f.pend[r.ID]
		if p == nil || p.empty() {
			continue
		}
		if !f.queue(ctx, r, p) {
			return false
		}
		queued = true
		for _, a := range p.acks {
			if err := f.s.d.Keys.AckToDevice(ctx, a.userID, a.deviceID, a.pos); err != nil {
				logging.From(ctx).WithError(err).WithFields(logrus.Fields{"user_id": a.userID, "device_id": a.deviceID}).Warn("appservice: acknowledge to-device messages")
			}
		}
		delete(f.pend, r.ID)
	}
	if !queued && !force && time.Since(f.lastWrite) < 2*time.Second {
		return true
	}
	var changed []*Registration
	for _, r := range f.targets {
		if f.last > f.pos[r.ID] {
			changed = append(changed, r)
		}
	}
	if len(changed) == 0 {
		return true
	}
	err := f.s.d.DB.Write(ctx, func(tx *storage.Tx) error {
		for _, r := range changed {
			if _, err := tx.Exec(ctx, upsertPosition, r.ID, f.last); err != nil {
				return fmt.Errorf("store position of %s: %w", r.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		// The events are queued; a restart before the next write sends them again.
		logging.From(ctx).WithError(err).Warn("appservice: store positions")
		return true
	}
	for _, r := range changed {
		f.pos[r.ID] = f.last
	}
	f.lastWrite = time.Now()
	return true
}

// queue puts a service's pending items in its queue, as transactions of
// at most maxTxnEvents events and maxTxnBytes. It retries while NATS
// fails, and reports false when the service stopped first.
func (f *feed) queue(ctx context.Context, r *Registration, p *pending) bool {
	snd := f.s.senders[r.ID]
	evs, poss := p.events, p.positions
	first := true
	for first || len(evs) > 0 {
		n, size := 0, 0
		for n < len(evs) && n < maxTxnEvents && size+len(evs[n]) < maxTxnBytes {
			size += len(evs[n])
			n++
		}
		txn := queuedTxn{Events: evs[:n]}
		if txn.Events == nil {
			txn.Events = []json.RawMessage{}
		}
		if first {
			// The ephemeral items ride with the first part.
			txn.Ephemeral, txn.ToDevice, txn.DeviceLists = p.ephemeral, p.toDevice, p.deviceLists
		}
		msgID := ""
		if n > 0 {
			// Named by the events it carries: queued twice (a restart
			// between queueing and storing the position), NATS keeps one,
			// and the service drops a repeated transaction ID.
			msgID = fmt.Sprintf("e%d-%d", poss[0], poss[n-1])
		} else {
			f.seq++
			msgID = fmt.Sprintf("x%s-%d", f.epoch, f.seq)
		}
		txn.TxnID = msgID
		data, err := json.Marshal(txn)
		if err != nil {
			logging.From(ctx).WithError(err).WithField("appservice", r.ID).Error("appservice: encode transaction")
			return true
		}
		for attempt := 0; ; attempt++ {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = f.s.js.Publish(pctx, snd.subject, data, jetstream.WithMsgID(r.ID+":"+msgID))
			cancel()
			if err == nil {
				break
			}
			logging.From(ctx).WithError(err).WithFields(logrus.Fields{"appservice": r.ID, "attempt": attempt}).Error("appservice: queue a transaction")
			if !backoff.Wait(attempt, f.s.stop) {
				return false
			}
		}
		evs, poss = evs[n:], poss[n:]
		first = false
	}
	return true
}
