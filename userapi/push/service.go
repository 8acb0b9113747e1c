package push

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/keyed"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/userapi"
)

// rooms is what push evaluation asks the roomserver.
type rooms interface {
	Position() int64
	StateAfter(ctx context.Context, ev roomserver.Event) ([]roomserver.Event, error)
}

// ruleSource gives a user's push rules, compiled once per version, and the
// users they ignore (whose messages and invites never notify them).
type ruleSource interface {
	CompiledPushRules(ctx context.Context, userID string, compile func(userID string, rs userapi.Ruleset) (any, error)) (any, error)
	IgnoredUsers(ctx context.Context, userID string) (map[string]struct{}, error)
}

// Bus is the part of the bus push delivery needs: a NATS connection for
// JetStream and the deployment's subject namespace.
type Bus interface {
	Conn() *nats.Conn
	Subject(topic string) string
}

// Options tune the push service.
type Options struct {
	ServerName string
	// RetryBase is the delay before the first retry of a failed push; it
	// doubles with each attempt, up to RetryMax. Defaults 2s and 10min.
	RetryBase time.Duration
	RetryMax  time.Duration
	// MaxAttempts is how often a push is tried before it is dropped (default 12).
	MaxAttempts int
	// GatewayTimeout bounds one request to a push gateway (default 15s).
	GatewayTimeout time.Duration
	// HTTPClient, if set, is used for push gateways (tests).
	HTTPClient *http.Client
	// Mail, when set (email configured), sends email notifications to
	// email pushers after EmailDelay (default 10 minutes) unread, checked
	// every EmailEvery (default a tenth of the delay, at most a minute);
	// ClientURL is linked from them.
	Mail       MailSender
	EmailDelay time.Duration
	EmailEvery time.Duration
	ClientURL  string
	// GatewayAllowed are internal address ranges push gateways may be at
	// (push.gateway_allowed_ranges); others are refused when connecting.
	GatewayAllowed []netip.Prefix
	// RoomCacheSize bounds the rooms whose members and power levels are kept (default 2000).
	RoomCacheSize int
	// CheckpointEvery is how often the changed unread counts are stored
	// (default 2s). After a crash, the events since the last checkpoint
	// are evaluated again (and their pushes sent again).
	CheckpointEvery time.Duration
}

// Service evaluates push rules for every committed room event, keeps the
// unread notification counts, stores notifications and pushers, and
// delivers pushes to HTTP push gateways.
type Service struct {
	db    *storage.DB
	rooms rooms
	rules ruleSource
	opts  Options

	// evalMu serialises evaluation (bus notices, catch-up, receipts), so
	// that memory and the write queue see changes in one order.
	evalMu    sync.Mutex
	last      int64 // last evaluated events position (evalMu)
	rpos      int64 // last applied receipts position (evalMu)
	cpPos     int64 // events position of the last checkpoint queued (evalMu)
	cpStop    chan struct{}
	cpDone    chan struct{}
	closeOnce sync.Once
	roomCache *lru.Cache[string, *roomInfo]

	counts      *counts
	pushers     *pusherIndex
	pusherLocks keyed.Mutex
	w           *writer
	// purged holds the rooms an admin purged: their events are no longer
	// evaluated (purge_room.go; set under evalMu).
	purged sync.Map
	d      *deliverer
	mail   *emailNotifier
}

// New loads the pushers and the unread notifications, evaluates the events
// committed since the last evaluated position, and starts the writer and the
// delivery of queued pushes.
func New(ctx context.Context, db *storage.DB, b Bus, rs rooms, rules ruleSource, opts Options) (*Service, error) {
	if opts.RetryBase <= 0 {
		opts.RetryBase = 2 * time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 10 * time.Minute
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 12
	}
	if opts.GatewayTimeout <= 0 {
		opts.GatewayTimeout = 15 * time.Second
	}
	if opts.RoomCacheSize <= 0 {
		opts.RoomCacheSize = 2000
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = 2 * time.Second
	}
	if opts.EmailDelay <= 0 {
		opts.EmailDelay = 10 * time.Minute
	}
	if opts.EmailEvery <= 0 {
		opts.EmailEvery = min(opts.EmailDelay/10, time.Minute)
	}
	s := &Service{
		db: db, rooms: rs, rules: rules, opts: opts,
		roomCache: lru.New[string, *roomInfo]("push_rooms", opts.RoomCacheSize),
		counts:    newCounts(),
		pushers:   newPusherIndex(),
	}
	if err := s.loadPushers(ctx); err != nil {
		return nil, err
	}
	if err := s.loadUnread(ctx); err != nil {
		return nil, err
	}
	if err := s.convertLegacy(ctx); err != nil {
		return nil, err
	}
	last, found, err := selectPositionOf(ctx, db, posEvents)
	if err != nil {
		return nil, err
	}
	if !found {
		// A new installation (or one from before push): start from now
		// rather than evaluating all of history.
		last = rs.Position()
		if _, err := db.Exec(ctx, upsertPositionOf, posEvents, last); err != nil {
			return nil, fmt.Errorf("init push position: %w", err)
		}
	}
	rpos, _, err := selectPositionOf(ctx, db, posReceipts)
	if err != nil {
		return nil, err
	}
	s.last, s.cpPos, s.rpos = last, last, rpos
	s.w = newWriter(s)
	if b != nil {
		if s.d, err = newDeliverer(ctx, s, b); err != nil {
			s.w.close()
			return nil, err
		}
	}
	// The events and receipts after the last checkpoint: those of the
	// counts that a crash lost (after a clean stop there are none).
	s.evalMu.Lock()
	err = s.catchUpLocked(ctx, rs.Position())
	s.evalMu.Unlock()
	if err == nil {
		err = s.applyStoredReceipts(ctx)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	s.cpStop, s.cpDone = make(chan struct{}), make(chan struct{})
	go s.checkpoints()
	if opts.Mail != nil {
		s.mail = newEmailNotifier(s)
	}
	return s, nil
}

// checkpoints queues a checkpoint of the counts every CheckpointEvery.
func (s *Service) checkpoints() {
	defer close(s.cpDone)
	t := time.NewTicker(s.opts.CheckpointEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.checkpoint()
		case <-s.cpStop:
			return
		}
	}
}

// checkpoint queues the counts changed since the last checkpoint, with
// the positions they reflect, when anything changed.
func (s *Service) checkpoint() {
	s.evalMu.Lock()
	defer s.evalMu.Unlock()
	snaps := s.counts.takeDirty()
	if len(snaps) == 0 && s.last == s.cpPos {
		return
	}
	s.cpPos = s.last
	s.w.enqueue(&work{cp: &checkpoint{pos: s.last, rpos: s.rpos, snaps: snaps}})
}

// Close writes what is queued and a last checkpoint, and stops delivery.
func (s *Service) Close() {
	s.closeOnce.Do(func() {
		if s.mail != nil {
			s.mail.close()
		}
		if s.cpStop != nil {
			close(s.cpStop)
			<-s.cpDone
			s.checkpoint()
		}
		if s.w != nil {
			s.w.close()
		}
		if s.d != nil {
			s.d.close()
		}
	})
}

func (s *Service) isLocal(userID string) bool {
	i := strings.IndexByte(userID, ':')
	return i > 0 && userID[i+1:] == s.opts.ServerName
}

// OnRoomEvent evaluates a committed event for the room's members; the sync
// engine calls it for every position of the events stream (a skipped one
// with n.Skip), in order, before it wakes them, so the counts they read
// include the event. Events it has not seen (those after its checkpoint at
// start) are read from the database first.
func (s *Service) OnRoomEvent(ctx context.Context, n *roomserver.Notice) {
	s.evalMu.Lock()
	defer s.evalMu.Unlock()
	if n.Pos <= s.last {
		return
	}
	if n.Pos > s.last+1 {
		if err := s.catchUpLocked(ctx, n.Pos-1); err != nil {
			// Evaluating this event would move past the gap for good: leave
			// it (and the rest of the gap) to the next notice's catch-up.
			logging.From(ctx).WithError(err).Error("push: catch up on missed events")
			return
		}
	}
	if !n.Skip {
		s.evaluateLocked(ctx, &n.Event)
	}
	s.last = n.Pos
}

// catchUpLocked evaluates the stored events after s.last up to upto.
func (s *Service) catchUpLocked(ctx context.Context, upto int64) error {
	for s.last < upto {
		evs, err := roomserver.EventsAfter(ctx, s.db, s.last, upto, 500)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			s.last = upto
			return nil
		}
		for i := range evs {
			s.evaluateLocked(ctx, &evs[i])
			s.last = evs[i].Pos
		}
	}
	return nil
}

// countsAsOwnRead: a user's own message reads everything before it.
func countsAsOwnRead(e *roomserver.Event) bool {
	return e.StateKey == nil && (e.Type == "m.room.message" || e.Type == "m.room.encrypted")
}

// evaluateLocked runs every recipient's push rules on the event, updates
// the counts and queues the notifications to store and push. The caller
// holds evalMu.
func (s *Service) evaluateLocked(ctx context.Context, e *roomserver.Event) {
	if _, gone := s.purged.Load(e.RoomID); gone {
		return
	}
	ri, err := s.room(ctx, e)
	if err != nil {
		logging.From(ctx).WithError(err).WithFields(logrus.Fields{"room_id": e.RoomID, "event_id": e.EventID}).Error("push: load room")
		return
	}
	var it *work
	if e.Sender != "" && s.isLocal(e.Sender) && countsAsOwnRead(e) {
		thread := threadMain
		if e.RelType == "m.thread" && e.RelatesTo != "" {
			thread = e.RelatesTo
		}
		s.counts.read(e.Sender, e.RoomID, thread, e.Pos)
	}
	recipients := s.recipients(ri, e)
	if len(recipients) > 0 {
		pe := ParseEvent(e)
		rc := RoomContext{MemberCount: len(ri.members), SenderLevel: ri.level(e.Sender), NotifyLevels: ri.notify}
		for _, u := range recipients {
			if s.ignores(ctx, u, e) {
				continue
			}
			compiled, err := s.rules.CompiledPushRules(ctx, u, Compile)
			if err != nil {
				logging.From(ctx).WithError(err).WithField("user_id", u).Error("push: load push rules")
				continue
			}
			rules, _ := compiled.(*Rules)
			if rules == nil {
				continue
			}
			act, _ := rules.Evaluate(pe, &rc, ri.members[u].lower)
			if act == nil || !act.Notify {
				continue
			}
			s.counts.add(u, e.RoomID, entry{pos: e.Pos, thread: pe.ThreadID, highlight: act.Highlight, call: e.Type == "m.call.invite"})
			if it == nil {
				it = &work{pos: e.Pos}
			}
			if it.ev == nil {
				it.ev = pe
			}
			it.rows = append(it.rows, notifRow{user: u, act: act})
			it.pushes = s.pushesFor(it.pushes, u, pe, act, ri)
		}
	}
	if e.StateKey != nil && e.Pos > ri.loadPos {
		ri.apply(e)
	}
	if it != nil {
		s.w.enqueue(it)
	}
}

// recipients are the local joined members but the sender, and the target
// of an invite.
// ignores tells whether u ignores the event's sender: a message from them,
// or their invite of u, does not notify u.
func (s *Service) ignores(ctx context.Context, u string, e *roomserver.Event) bool {
	if e.StateKey != nil && !(e.Membership == "invite" && *e.StateKey == u) {
		return false
	}
	ignored, err := s.rules.IgnoredUsers(ctx, u)
	if err != nil {
		logging.From(ctx).WithError(err).WithField("user_id", u).Error("push: load ignored users")
		return false
	}
	_, ok := ignored[e.Sender]
	return ok
}

func (s *Service) recipients(ri *roomInfo, e *roomserver.Event) []string {
	out := make([]string, 0, len(ri.members))
	for u := range ri.members {
		if u != e.Sender && s.isLocal(u) {
			out = append(out, u)
		}
	}
	if e.Type == "m.room.member" && e.StateKey != nil && e.Membership == "invite" && *e.StateKey != e.Sender && s.isLocal(*e.StateKey) {
		if _, joined := ri.members[*e.StateKey]; !joined {
			out = append(out, *e.StateKey)
		}
	}
	return out
}

// OnReceipt applies a read receipt of a local user (m.read or
// m.read.private) for the event at eventPos: threadID "" reads every
// thread, "main" the main timeline, else one thread. receiptPos is the
// receipt's position in the receipts stream. The sync engine calls it
// before it wakes the user.
func (s *Service) OnReceipt(ctx context.Context, roomID, userID, threadID string, eventPos, receiptPos int64) {
	s.evalMu.Lock()
	defer s.evalMu.Unlock()
	s.counts.read(userID, roomID, threadID, eventPos)
	s.rpos = max(s.rpos, receiptPos)
}

// applyStoredReceipts applies, at start, the receipts stored after the
// last checkpoint's receipts position.
func (s *Service) applyStoredReceipts(ctx context.Context) error {
	marks, err := storedReceipts(ctx, s.db, s.rpos)
	if err != nil {
		return err
	}
	for _, m := range marks {
		s.OnReceipt(ctx, m.room, m.user, m.thread, m.pos, m.rpos)
	}
	return nil
}

// Unread returns the user's notification and highlight counts in a room,
// all threads included.
func (s *Service) Unread(roomID, userID string) (notifications, highlights int) {
	return s.counts.total(userID, roomID)
}

// UnreadByThread calls fn with the counts of the main timeline (thread "",
// always) and of each thread with unread notifications.
func (s *Service) UnreadByThread(roomID, userID string, fn func(threadID string, notifications, highlights int)) {
	s.counts.byThread(userID, roomID, fn)
}

// Position is the last events position evaluated.
func (s *Service) Position() int64 {
	s.evalMu.Lock()
	defer s.evalMu.Unlock()
	return s.last
}

// Flush waits until everything evaluated so far is stored (or ctx ends).
func (s *Service) Flush(ctx context.Context) error { return s.w.flush(ctx) }
