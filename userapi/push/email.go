package push

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/mailer"
)

// Email notifications: a pusher of kind "email" (its pushkey is the
// address, which must be bound to the user's account with /account/3pid)
// gets one email about the notifications that stayed unread for
// Options.EmailDelay, at most one email per delay. email_pusher_progress
// keeps the notifications position each pusher has been told up to, so a
// restart sends nothing twice. One goroutine checks every EmailEvery.

// MailSender sends email (internal/mailer).
type MailSender interface {
	Send(ctx context.Context, msg mailer.Message) error
}

// emailScan bounds the notification rows one check of a pusher reads.
const emailScan = 500

// emailShown bounds the messages shown per room and the rooms per email.
const (
	emailShownPerRoom = 5
	emailShownRooms   = 10
	emailBodyRunes    = 300
)

type emailNotifier struct {
	s        *Service
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	lastSent map[string]time.Time // user|pushkey → last email
}

func newEmailNotifier(s *Service) *emailNotifier {
	n := &emailNotifier{s: s, stop: make(chan struct{}), done: make(chan struct{}), lastSent: map[string]time.Time{}}
	go n.run()
	return n
}

func (n *emailNotifier) close() {
	close(n.stop)
	<-n.done
}

func (n *emailNotifier) run() {
	defer close(n.done)
	t := time.NewTicker(n.s.opts.EmailEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			n.checkAll(ctx, time.Now())
			cancel()
		case <-n.stop:
			return
		}
	}
}

// emailPushers lists the email pushers.
func (pi *pusherIndex) emailPushers() []*Pusher {
	pi.mu.RLock()
	defer pi.mu.RUnlock()
	var out []*Pusher
	for _, ps := range pi.byUser {
		for _, p := range ps {
			if p.Kind == "email" {
				out = append(out, p)
			}
		}
	}
	return out
}

func (n *emailNotifier) checkAll(ctx context.Context, now time.Time) {
	if err := n.s.Flush(ctx); err != nil {
		logging.From(ctx).WithError(err).Warn("email notifications: flush")
		return
	}
	for _, p := range n.s.pushers.emailPushers() {
		select {
		case <-n.stop:
			return
		default:
		}
		if err := n.check(ctx, p, now); err != nil {
			logging.From(ctx).WithError(err).WithField("user_id", p.userID).Warn("email notifications: not sent")
		}
	}
}

// dueNotification is one unread notification old enough for an email.
type dueNotification struct {
	pos     int64
	roomID  string
	eventID string
	ts      int64
}

// due returns the pusher's unread notifications older than the delay that
// no email has told of yet, and the position the pusher is done with.
func (n *emailNotifier) due(ctx context.Context, p *Pusher, now time.Time) ([]dueNotification, int64, error) {
	s := n.s
	var from int64
	err := s.db.QueryRow(ctx, `SELECT sent_pos FROM email_pusher_progress WHERE user_id = $1 AND pushkey = $2`, p.userID, p.Pushkey).Scan(&from)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, 0, fmt.Errorf("email progress of %s: %w", p.userID, err)
	}
	cutoff := now.Add(-s.opts.EmailDelay).UnixMilli()
	rows, err := s.db.Query(ctx, `SELECT pos, room_id, event_id, ts, data FROM push_notified WHERE pos > $1 AND ts <= $2 AND ts >= $3 ORDER BY pos LIMIT $4`,
		from, cutoff, p.pushkeyTS*1000, emailScan)
	if err != nil {
		return nil, 0, fmt.Errorf("notifications of %s: %w", p.userID, err)
	}
	defer rows.Close()
	needle, _ := json.Marshal(p.userID)
	var out []dueNotification
	done := from
	for rows.Next() {
		var d dueNotification
		var data []byte
		if err := rows.Scan(&d.pos, &d.roomID, &d.eventID, &d.ts, &data); err != nil {
			return nil, 0, fmt.Errorf("notifications of %s: %w", p.userID, err)
		}
		done = d.pos
		if !bytes.Contains(data, needle) {
			continue
		}
		var rec notifiedRecord
		if json.Unmarshal(data, &rec) != nil {
			continue
		}
		if _, ok := rec.U[p.userID]; ok && s.counts.isUnread(p.userID, d.roomID, d.pos) {
			out = append(out, d)
		}
	}
	return out, done, rows.Err()
}

func (n *emailNotifier) check(ctx context.Context, p *Pusher, now time.Time) error {
	key := p.userID + "|" + p.Pushkey
	n.mu.Lock()
	last := n.lastSent[key]
	n.mu.Unlock()
	if now.Sub(last) < n.s.opts.EmailDelay {
		return nil // at most one email per delay
	}
	due, done, err := n.due(ctx, p, now)
	if err != nil || done == 0 {
		return err
	}
	if len(due) > 0 {
		// Only to an address the user proved is theirs.
		var owner string
		err := n.s.db.QueryRow(ctx, `SELECT user_id FROM user_threepids WHERE medium = 'email' AND address = $1`, strings.ToLower(p.Pushkey)).Scan(&owner)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("owner of %s's email pusher address: %w", p.userID, err)
		}
		if owner == p.userID {
			msg, err := n.compose(ctx, p, due)
			if err != nil {
				return err
			}
			if err := n.s.opts.Mail.Send(ctx, msg); err != nil {
				return err // tried again at the next check
			}
			n.mu.Lock()
			n.lastSent[key] = now
			n.mu.Unlock()
			logging.From(ctx).WithFields(logrus.Fields{"user_id": p.userID, "notifications": len(due)}).Info("email notification sent")
		}
	}
	if _, err := n.s.db.Exec(ctx, `INSERT INTO email_pusher_progress (user_id, pushkey, sent_pos) VALUES ($1, $2, $3)
ON CONFLICT (user_id, pushkey) DO UPDATE SET sent_pos = excluded.sent_pos`, p.userID, p.Pushkey, done); err != nil {
		return fmt.Errorf("email progress of %s: %w", p.userID, err)
	}
	return nil
}

// compose makes the email: the rooms with their newest messages.
func (n *emailNotifier) compose(ctx context.Context, p *Pusher, due []dueNotification) (mailer.Message, error) {
	data := mailer.NotificationData{ServerName: n.s.opts.ServerName, UserID: p.userID, Link: n.s.opts.ClientURL, Total: len(due)}
	if data.Link == "" {
		data.Link = "https://matrix.to/#/" + p.userID
	}
	byRoom := map[string]*mailer.NotificationRoom{}
	var order []string
	for _, d := range due {
		r := byRoom[d.roomID]
		if r == nil {
			if len(order) >= emailShownRooms {
				continue
			}
			r = &mailer.NotificationRoom{Name: n.roomName(ctx, d.roomID)}
			byRoom[d.roomID] = r
			order = append(order, d.roomID)
		}
		if len(r.Messages) >= emailShownPerRoom {
			r.More++
			continue
		}
		sender, body := n.eventSummary(ctx, d.eventID)
		r.Messages = append(r.Messages, mailer.NotificationMessage{Sender: sender, Body: body, Time: time.UnixMilli(d.ts).UTC().Format("15:04 MST")})
	}
	for _, id := range order {
		data.Rooms = append(data.Rooms, *byRoom[id])
	}
	return mailer.Render("notification", p.Pushkey, data)
}

// roomName is the room's name, else its canonical alias, else "a room".
func (n *emailNotifier) roomName(ctx context.Context, roomID string) string {
	for _, st := range []struct{ typ, field string }{{"m.room.name", "name"}, {"m.room.canonical_alias", "alias"}} {
		var raw string
		err := n.s.db.QueryRow(ctx, `SELECT e.json FROM room_state s JOIN events e ON e.event_id = s.event_id WHERE s.room_id = $1 AND s.type = $2 AND s.state_key = ''`, roomID, st.typ).Scan(&raw)
		if err != nil {
			continue
		}
		var ev struct {
			Content map[string]any `json:"content"`
		}
		if json.Unmarshal([]byte(raw), &ev) == nil {
			if v, _ := ev.Content[st.field].(string); v != "" {
				return clip(v, 100)
			}
		}
	}
	return "a room"
}

// eventSummary is the sender's display name and the message's text; an
// encrypted message shows no text.
func (n *emailNotifier) eventSummary(ctx context.Context, eventID string) (string, string) {
	var raw string
	if err := n.s.db.QueryRow(ctx, `SELECT json FROM events WHERE event_id = $1`, eventID).Scan(&raw); err != nil {
		return "someone", "(a message)"
	}
	var ev struct {
		Type    string `json:"type"`
		Sender  string `json:"sender"`
		Content struct {
			Body    string `json:"body"`
			MsgType string `json:"msgtype"`
		} `json:"content"`
	}
	_ = json.Unmarshal([]byte(raw), &ev)
	sender := ev.Sender
	var dn sql.NullString
	if err := n.s.db.QueryRow(ctx, `SELECT displayname FROM profiles WHERE user_id = $1`, ev.Sender).Scan(&dn); err == nil && dn.String != "" {
		sender = dn.String
	}
	switch {
	case ev.Type == "m.room.encrypted":
		return clip(sender, 100), "(an encrypted message)"
	case ev.Type == "m.room.member":
		return clip(sender, 100), "(invited you)"
	case ev.Content.Body == "":
		return clip(sender, 100), "(a message)"
	}
	return clip(sender, 100), clip(ev.Content.Body, emailBodyRunes)
}

func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}
