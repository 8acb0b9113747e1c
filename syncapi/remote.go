package syncapi

import (
	"context"
	"fmt"
	"sort"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
)

// What other servers tell of their users (the EDUs of inbound federation
// transactions), and what the federation forwarder asks to send ours:
// presence and receipts. The origin check (a server speaks only for its
// own users) and the server ACLs are the federation API's; the checks of
// what the data says are here.

// maxRemoteReceiptEvents bounds the event IDs of one user's receipt
// looked at.
const maxRemoteReceiptEvents = 20

// SetRemotePresence stores the presence another server sent for one of its
// users (an m.presence EDU): it reaches our users who share a room with
// them in /sync as our users' presence does. With presence disabled, or
// for a user in none of our rooms (nobody here may see it), it is
// ignored. lastActiveAgo is the milliseconds since the user was last
// active, as the server said when it sent the EDU.
func (s *Service) SetRemotePresence(ctx context.Context, userID, presence, statusMsg string, lastActiveAgo int64, currentlyActive bool) error {
	if !s.opts.PresenceEnabled {
		return nil
	}
	switch presence {
	case "online", "offline", "unavailable":
	default:
		return merr.InvalidParam("presence must be online, offline or unavailable")
	}
	if len(statusMsg) > 1024 || !storage.StorableText(statusMsg) {
		return merr.InvalidParam("status_msg too long or not storable")
	}
	if !ids.ValidUserID(userID) || len(userID) > 255 || !storage.StorableText(userID) {
		return merr.InvalidParam("Invalid user ID")
	}
	if !s.inSomeRoom(userID) {
		// A join that just committed may not have reached memory yet.
		s.CatchUp(ctx)
		if !s.inSomeRoom(userID) {
			return nil
		}
	}
	ts := nowMS()
	if lastActiveAgo > 0 {
		ts -= min(lastActiveAgo, ts)
	}
	active := currentlyActive
	unlock := s.presenceLocks.Lock(userID)
	defer unlock()
	if s.presence.TouchRemote(userID, presence, statusMsg, active, ts) {
		// Only the time moved: kept in memory, as our users' activity is.
		return nil
	}
	pos := s.presenceSeq.Next()
	_, err := s.db.Exec(ctx, `INSERT INTO presence (user_id, presence, status_msg, last_active_ts, pos, currently_active) VALUES ($1,$2,$3,$4,$5,$6)
ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence, status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,
pos = excluded.pos, currently_active = excluded.currently_active`,
		userID, presence, statusMsg, ts, pos, active)
	if err != nil {
		s.presenceSeq.Skip(pos)
		return fmt.Errorf("store presence of %s: %w", userID, err)
	}
	entry := PresenceNotice{Presence: presence, StatusMsg: statusMsg, LastActive: ts, Pos: pos, UserID: userID, Active: &active}
	s.presence.Put(entry)
	s.presenceSeq.Done(pos, entry)
	return nil
}

// inSomeRoom tells whether the user is joined to a room of ours.
func (s *Service) inSomeRoom(userID string) bool { return s.n.InSomeRoom(userID) }

// CurrentPresence is a user's presence as stored (false: never set, which
// is offline).
func (s *Service) CurrentPresence(userID string) (PresenceNotice, bool) {
	if e := s.presence.Get(userID); e != nil {
		return *e, true
	}
	return PresenceNotice{}, false
}

// ServersSharingRoom names the servers of the users who share a joined
// room with userID (its own server included), sorted.
func (s *Service) ServersSharingRoom(userID string) []string {
	set := map[string]bool{}
	for _, u := range s.n.CoMembers(userID) {
		if srv := ids.ServerOf(u, '@'); srv != "" {
			set[srv] = true
		}
	}
	out := make([]string, 0, len(set))
	for srv := range set {
		out = append(out, srv)
	}
	sort.Strings(out)
	return out
}

// MembersOf lists the users joined to a room, from memory.
func (s *Service) MembersOf(roomID string) []string { return s.n.Members(roomID) }

// SetRemoteReceipt stores a public read receipt another server sent for
// one of its users (an m.receipt EDU), with the time that server gave it.
// Of the event IDs the receipt names, the newest one known here is kept;
// when none is known yet (the event is still on its way), the last one
// named is. Private receipts never cross servers: only m.read is taken.
func (s *Service) SetRemoteReceipt(ctx context.Context, userID, roomID string, eventIDs []string, threadID string, ts int64) error {
	if len(threadID) > 255 || !storage.StorableText(threadID) {
		return merr.InvalidParam("Invalid thread_id")
	}
	if len(eventIDs) > maxRemoteReceiptEvents {
		eventIDs = eventIDs[len(eventIDs)-maxRemoteReceiptEvents:]
	}
	var valid []string
	for _, id := range eventIDs {
		if len(id) > 1 && len(id) <= 255 && id[0] == '$' && storage.StorableText(id) {
			valid = append(valid, id)
		}
	}
	if len(valid) == 0 {
		return merr.InvalidParam("No valid event ID in the receipt")
	}
	s.CatchUp(ctx)
	if !s.isJoined(userID, roomID) {
		return merr.Forbidden("%s is not in this room", userID)
	}
	evs, err := roomserver.EventsByID(ctx, s.db, valid)
	if err != nil {
		return err
	}
	n := ReceiptNotice{RoomID: roomID, UserID: userID, Type: "m.read", ThreadID: threadID}
	elsewhere := map[string]bool{}
	for _, ev := range evs {
		if ev.RoomID != roomID {
			elsewhere[ev.EventID] = true
		} else if ev.Pos > n.EventPos {
			n.EventID, n.EventPos = ev.EventID, ev.Pos
		}
	}
	for i := len(valid) - 1; n.EventID == "" && i >= 0; i-- {
		if !elsewhere[valid[i]] {
			n.EventID = valid[i]
		}
	}
	if n.EventID == "" {
		return merr.NotFound("The receipt's events are in another room")
	}
	now := nowMS()
	if ts <= 0 || ts > now {
		ts = now
	}
	n.TS = ts
	return s.storeReceipt(ctx, n)
}
