package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// AdminRoom is a room as the admin API lists it (the fields Synapse's
// admin API gives). Details adds the topic and the avatar.
type AdminRoom struct {
	RoomID             string  `json:"room_id"`
	Name               *string `json:"name"`
	Topic              *string `json:"topic,omitempty"`
	Avatar             *string `json:"avatar,omitempty"`
	CanonicalAlias     *string `json:"canonical_alias"`
	JoinedMembers      int64   `json:"joined_members"`
	JoinedLocalMembers int64   `json:"joined_local_members"`
	Version            string  `json:"version"`
	Creator            string  `json:"creator"`
	Encryption         *string `json:"encryption"`
	Federatable        bool    `json:"federatable"`
	Public             bool    `json:"public"`
	JoinRules          *string `json:"join_rules"`
	GuestAccess        *string `json:"guest_access"`
	HistoryVisibility  *string `json:"history_visibility"`
	StateEvents        int64   `json:"state_events"`
	RoomType           *string `json:"room_type"`
}

// adminStateTypes are the state events (with the empty state key) the
// room list reads, and the content field each gives.
var adminStateTypes = map[string]string{
	spec.MRoomName:              "name",
	spec.MRoomTopic:             "topic",
	"m.room.avatar":             "url",
	spec.MRoomCanonicalAlias:    "alias",
	"m.room.encryption":         "algorithm",
	spec.MRoomJoinRules:         "join_rule",
	spec.MRoomGuestAccess:       "guest_access",
	spec.MRoomHistoryVisibility: "history_visibility",
	spec.MRoomCreate:            "",
}

// AdminRooms returns every room this server holds, or only roomID when it
// is not empty (M_NOT_FOUND when it is unknown). Three queries for all
// rooms: the admin API pages, sorts and filters in memory.
func (s *Service) AdminRooms(ctx context.Context, roomID string) ([]AdminRoom, error) {
	where, args := "", []any{}
	if roomID != "" {
		if !validRoomID(roomID) {
			return nil, merr.NotFound("Unknown room %s", roomID)
		}
		where, args = " WHERE room_id = $1", []any{roomID}
	}
	rows, err := s.db.Query(ctx, `SELECT room_id, room_version, creator, published FROM rooms`+where+` ORDER BY room_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("admin rooms: %w", err)
	}
	var out []AdminRoom
	index := map[string]int{}
	for rows.Next() {
		var r AdminRoom
		if err := rows.Scan(&r.RoomID, &r.Version, &r.Creator, &r.Public); err != nil {
			rows.Close()
			return nil, err
		}
		r.Federatable = true
		index[r.RoomID] = len(out)
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if roomID != "" && len(out) == 0 {
		return nil, merr.NotFound("Unknown room %s", roomID)
	}
	countArgs := append([]any{"%:" + s.opts.ServerName}, args...)
	countWhere := ""
	if roomID != "" {
		countWhere = " WHERE room_id = $2"
	}
	rows, err = s.db.Query(ctx, `SELECT room_id, COUNT(*),
SUM(CASE WHEN type = 'm.room.member' AND membership = 'join' THEN 1 ELSE 0 END),
SUM(CASE WHEN type = 'm.room.member' AND membership = 'join' AND state_key LIKE $1 THEN 1 ELSE 0 END)
FROM room_state`+countWhere+` GROUP BY room_id`, countArgs...)
	if err != nil {
		return nil, fmt.Errorf("admin room counts: %w", err)
	}
	for rows.Next() {
		var id string
		var n, joined, local int64
		if err := rows.Scan(&id, &n, &joined, &local); err != nil {
			rows.Close()
			return nil, err
		}
		if i, ok := index[id]; ok {
			out[i].StateEvents, out[i].JoinedMembers, out[i].JoinedLocalMembers = n, joined, local
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	types := make([]string, 0, len(adminStateTypes))
	for t := range adminStateTypes {
		types = append(types, t)
	}
	stateArgs := []any{types}
	stateWhere := ""
	if roomID != "" {
		stateArgs, stateWhere = append(stateArgs, roomID), " AND s.room_id = $2"
	}
	rows, err = s.db.Query(ctx, `SELECT s.room_id, s.type, e.json FROM room_state s JOIN events e ON e.event_id = s.event_id
WHERE s.state_key = '' AND s.type IN ($1)`+stateWhere, stateArgs...)
	if err != nil {
		return nil, fmt.Errorf("admin room state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, typ string
		var raw []byte
		if err := rows.Scan(&id, &typ, &raw); err != nil {
			return nil, err
		}
		i, ok := index[id]
		if !ok {
			continue
		}
		var ev struct {
			Content map[string]json.RawMessage `json:"content"`
		}
		if json.Unmarshal(raw, &ev) != nil {
			continue
		}
		str := func(field string) *string {
			var v string
			if json.Unmarshal(ev.Content[field], &v) != nil {
				return nil
			}
			return &v
		}
		r := &out[i]
		switch typ {
		case spec.MRoomName:
			r.Name = str("name")
		case spec.MRoomTopic:
			var c json.RawMessage
			if b, err := json.Marshal(ev.Content); err == nil {
				c = b
			}
			if t := PlainTopic(c); t != "" {
				r.Topic = &t
			}
		case "m.room.avatar":
			r.Avatar = str("url")
		case spec.MRoomCanonicalAlias:
			r.CanonicalAlias = str("alias")
		case "m.room.encryption":
			r.Encryption = str("algorithm")
		case spec.MRoomJoinRules:
			r.JoinRules = str("join_rule")
		case spec.MRoomGuestAccess:
			r.GuestAccess = str("guest_access")
		case spec.MRoomHistoryVisibility:
			r.HistoryVisibility = str("history_visibility")
		case spec.MRoomCreate:
			var fed bool
			if json.Unmarshal(ev.Content["m.federate"], &fed) == nil {
				r.Federatable = fed
			}
			r.RoomType = str("type")
		}
	}
	return out, rows.Err()
}

// LocalMembers returns the local users with a join, invite or knock in
// the room's current state.
func (s *Service) LocalMembers(ctx context.Context, roomID string) (map[string]string, error) {
	out := map[string]string{}
	err := s.withRoom(ctx, roomID, func(r *room) error {
		for k := range r.state {
			if k.typ != spec.MRoomMember || !s.IsLocal(k.key) {
				continue
			}
			switch m := membershipOf(r, k.key); m {
			case spec.Join, spec.Invite, spec.Knock:
				out[k.key] = m
			}
		}
		return nil
	})
	return out, err
}

// Blocked tells whether an admin blocked the room, and who.
func (s *Service) Blocked(ctx context.Context, roomID string) (bool, string, error) {
	if !storage.StorableText(roomID) {
		return false, "", nil
	}
	var by string
	err := s.db.QueryRow(ctx, `SELECT blocked_by FROM room_blocks WHERE room_id = $1`, roomID).Scan(&by)
	if isNoRows(err) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("room block of %s: %w", roomID, err)
	}
	return true, by, nil
}

// SetBlocked blocks the room (no local user may join, knock or be invited
// again) or lifts the block. The room need not be known here.
func (s *Service) SetBlocked(ctx context.Context, roomID, adminID string, block bool) error {
	if !validRoomID(roomID) {
		return merr.InvalidParam("Invalid room ID %q", roomID)
	}
	var err error
	if block {
		_, err = s.db.Exec(ctx, `INSERT INTO room_blocks (room_id, blocked_by, created_ts) VALUES ($1, $2, $3)
ON CONFLICT (room_id) DO NOTHING`, roomID, adminID, time.Now().UnixMilli())
	} else {
		_, err = s.db.Exec(ctx, `DELETE FROM room_blocks WHERE room_id = $1`, roomID)
	}
	if err != nil {
		return fmt.Errorf("set block of %s: %w", roomID, err)
	}
	logging.From(ctx).WithFields(map[string]any{"room_id": roomID, "user_id": adminID, "block": block}).Info("room block changed")
	return nil
}

// checkNotBlocked refuses a local user's way into a blocked room.
func (s *Service) checkNotBlocked(ctx context.Context, roomID, userID string) error {
	if !s.IsLocal(userID) {
		return nil
	}
	blocked, _, err := s.Blocked(ctx, roomID)
	if err != nil {
		return err
	}
	if blocked {
		return merr.Forbidden("This room has been blocked on this server")
	}
	return nil
}

// ShutdownRequest is what an admin asks of a room shutdown.
type ShutdownRequest struct {
	// AdminID is the admin asking.
	AdminID string
	// NewRoomUserID, when set, creates a room (as this local user) named
	// RoomName with Message in it, and moves the local members there.
	NewRoomUserID string
	RoomName      string
	Message       string
	Block         bool
	Purge         bool
	// ForcePurge purges even when some local users could not be removed.
	ForcePurge bool
}

// ShutdownResult tells what a shutdown did (the shape of Synapse's answer).
type ShutdownResult struct {
	KickedUsers       []string `json:"kicked_users"`
	FailedToKickUsers []string `json:"failed_to_kick_users"`
	LocalAliases      []string `json:"local_aliases"`
	NewRoomID         *string  `json:"new_room_id"`
}

// Default texts of the notice room, as admin tools expect them.
const (
	DefaultShutdownRoomName = "Content Violation Notification"
	DefaultShutdownMessage  = "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."
)

// ValidateShutdown checks a shutdown request before any work starts.
func (s *Service) ValidateShutdown(ctx context.Context, roomID string, req ShutdownRequest) (known bool, err error) {
	if !validRoomID(roomID) {
		return false, merr.InvalidParam("Invalid room ID %q", roomID)
	}
	if req.NewRoomUserID != "" {
		if !ValidUserID(req.NewRoomUserID) || !s.IsLocal(req.NewRoomUserID) {
			return false, merr.InvalidParam("new_room_user_id must be a local user")
		}
	}
	if !storage.StorableText(req.RoomName) || !storage.StorableText(req.Message) || len(req.RoomName) > 255 || len(req.Message) > 16<<10 {
		return false, merr.InvalidParam("room_name or message is too long or not text")
	}
	if _, err := selectRoom(ctx, s.db, roomID); err != nil {
		if isNotFound(err) {
			if !req.Block {
				return false, merr.NotFound("Unknown room %s", roomID)
			}
			return false, nil
		}
		return false, err
	}
	return true, nil
}

func isNotFound(err error) bool { return err != nil && (err == storage.ErrNotFound || isNoRows(err)) }

// ShutdownRoom closes a room for this server's users: it blocks it (if
// asked), makes every local member leave (each as themselves, which the
// auth rules always allow), moves them to a new notice room (if asked),
// moves the room's local aliases there (or deletes them), takes it out of
// the directory and, with Purge, deletes everything the server stored of
// it. Other servers' users stay in the room on their servers.
func (s *Service) ShutdownRoom(ctx context.Context, roomID string, req ShutdownRequest, progress func(phase string)) (ShutdownResult, error) {
	res := ShutdownResult{KickedUsers: []string{}, FailedToKickUsers: []string{}, LocalAliases: []string{}}
	known, err := s.ValidateShutdown(ctx, roomID, req)
	if err != nil {
		return res, err
	}
	if req.Block {
		if err := s.SetBlocked(ctx, roomID, req.AdminID, true); err != nil {
			return res, err
		}
	}
	if !known {
		return res, nil
	}
	log := logging.From(ctx).WithField("room_id", roomID)
	if progress != nil {
		progress("shutting_down")
	}
	var newRoom string
	if req.NewRoomUserID != "" {
		name, msg := req.RoomName, req.Message
		if name == "" {
			name = DefaultShutdownRoomName
		}
		if msg == "" {
			msg = DefaultShutdownMessage
		}
		// Everyone may join; only the sender may speak.
		created, err := s.CreateRoom(ctx, req.NewRoomUserID, CreateRoomRequest{Name: &name, Preset: "public_chat",
			PowerLevelContentOverride: json.RawMessage(`{"users_default":-10}`)})
		if err != nil {
			return res, fmt.Errorf("create the notice room: %w", err)
		}
		newRoom = created.RoomID
		res.NewRoomID = &newRoom
		content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": msg})
		if _, err := s.Send(ctx, Sender{UserID: req.NewRoomUserID}, SendRequest{RoomID: newRoom, Type: "m.room.message", Content: content}); err != nil {
			return res, fmt.Errorf("send the notice: %w", err)
		}
	}
	members, err := s.LocalMembers(ctx, roomID)
	if err != nil {
		return res, err
	}
	for userID := range members {
		if err := s.Leave(ctx, userID, roomID, ""); err != nil {
			log.WithError(err).WithField("user_id", userID).Warn("room shutdown: could not remove a member")
			res.FailedToKickUsers = append(res.FailedToKickUsers, userID)
			continue
		}
		res.KickedUsers = append(res.KickedUsers, userID)
		if err := s.Forget(ctx, userID, roomID); err != nil {
			log.WithError(err).WithField("user_id", userID).Debug("room shutdown: forget failed")
		}
		if newRoom != "" && userID != req.NewRoomUserID {
			if _, err := s.Join(ctx, userID, newRoom, ""); err != nil {
				log.WithError(err).WithField("user_id", userID).Warn("room shutdown: could not join the notice room")
			}
		}
	}
	sort.Strings(res.KickedUsers)
	sort.Strings(res.FailedToKickUsers)
	if res.LocalAliases, err = s.AliasesOf(ctx, roomID); err != nil {
		return res, err
	}
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		if newRoom != "" {
			if _, err := tx.Exec(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, newRoom, roomID); err != nil {
				return err
			}
		} else if _, err := tx.Exec(ctx, `DELETE FROM room_aliases WHERE room_id = $1`, roomID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE rooms SET published = FALSE WHERE room_id = $1`, roomID)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("aliases and directory of %s: %w", roomID, err)
	}
	log.WithFields(map[string]any{"user_id": req.AdminID, "kicked": len(res.KickedUsers), "failed": len(res.FailedToKickUsers)}).Warn("room shut down")
	if !req.Purge {
		return res, nil
	}
	if len(res.FailedToKickUsers) > 0 && !req.ForcePurge {
		return res, merr.Custom(400, "M_UNKNOWN", "Some local users are still in the room; use force_purge to purge it anyway")
	}
	if progress != nil {
		progress("purging")
	}
	return res, s.PurgeRoom(ctx, roomID)
}

// purgeRoomSQL deletes everything the roomserver stored of a room.
var purgeRoomSQL = []string{
	`DELETE FROM state_snapshot_entries WHERE snapshot_id IN (SELECT snapshot_id FROM state_snapshots WHERE room_id = $1)`,
	`DELETE FROM state_snapshots WHERE room_id = $1`,
	`DELETE FROM room_state WHERE room_id = $1`,
	`DELETE FROM room_extremities WHERE room_id = $1`,
	`DELETE FROM prev_events WHERE room_id = $1`,
	`DELETE FROM event_outliers WHERE room_id = $1`,
	`DELETE FROM event_search WHERE room_id = $1`,
	`DELETE FROM events WHERE room_id = $1`,
	`DELETE FROM room_aliases WHERE room_id = $1`,
	`DELETE FROM forgotten_rooms WHERE room_id = $1`,
	`DELETE FROM rooms WHERE room_id = $1`,
}

// PurgeRoom deletes a room's events, state and aliases from the
// database, under the room's lock, and forgets it in memory. Its
// positions on the events stream stay holes (readers skip them).
func (s *Service) PurgeRoom(ctx context.Context, roomID string) error {
	if !validRoomID(roomID) {
		return merr.InvalidParam("Invalid room ID %q", roomID)
	}
	unlock := s.locks.Lock(roomID)
	defer unlock()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		for _, q := range purgeRoomSQL {
			if _, err := tx.Exec(ctx, q, roomID); err != nil {
				return fmt.Errorf("%s: %w", strings.Fields(q)[2], err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("purge room %s: %w", roomID, err)
	}
	s.rooms.Remove(roomID)
	s.pduCache.Purge()
	s.snaps.Purge()
	s.snapsByKey.Purge()
	logging.From(ctx).WithField("room_id", roomID).Warn("room purged")
	return nil
}

// PurgePoint is where a history purge stops: before an event's depth in
// the room's DAG (the event and the others at its depth stay), or before
// a time (origin_server_ts).
type PurgePoint struct {
	EventID  string
	BeforeTS int64
	// DeleteLocal purges the events of this server's users too; without
	// it only other servers' events go.
	DeleteLocal bool
}

// PurgedEvent is one event a history purge removed.
type PurgedEvent struct {
	EventID   string
	RelatesTo string
}

// ValidatePurge checks a history purge before it starts.
func (s *Service) ValidatePurge(ctx context.Context, roomID string, p PurgePoint) error {
	if !validRoomID(roomID) {
		return merr.NotFound("Unknown room %s", roomID)
	}
	if _, err := selectRoom(ctx, s.db, roomID); err != nil {
		if isNotFound(err) {
			return merr.NotFound("Unknown room %s", roomID)
		}
		return err
	}
	if p.EventID != "" {
		if !storage.StorableText(p.EventID) || !strings.HasPrefix(p.EventID, "$") {
			return merr.NotFound("Event not found")
		}
		var room string
		err := s.db.QueryRow(ctx, `SELECT room_id FROM events WHERE event_id = $1`, p.EventID).Scan(&room)
		if isNoRows(err) || (err == nil && room != roomID) {
			return merr.NotFound("Event %s not found in the room", p.EventID)
		}
		return err
	}
	if p.BeforeTS <= 0 {
		return merr.InvalidParam("Give purge_up_to_event_id or purge_up_to_ts")
	}
	return nil
}

// PurgeHistory deletes the room's message events from before the point,
// for everyone on this server: state events (the room's state and the
// auth chain rest on them) and the room's newest events (which new events
// build on) stay. The removed events' edges go with them, so the oldest
// event left is no gap to backfill. Returns what was removed; readers
// must drop their cached copies.
func (s *Service) PurgeHistory(ctx context.Context, roomID string, p PurgePoint) ([]PurgedEvent, error) {
	if err := s.ValidatePurge(ctx, roomID, p); err != nil {
		return nil, err
	}
	unlock := s.locks.Lock(roomID)
	defer unlock()
	cond, args := "", []any{roomID}
	if p.EventID != "" {
		// The event, and the others at its depth in the DAG, stay.
		var topo int64
		if err := s.db.QueryRow(ctx, `SELECT topo FROM events WHERE event_id = $1`, p.EventID).Scan(&topo); err != nil {
			return nil, fmt.Errorf("purge point %s: %w", p.EventID, err)
		}
		cond, args = ` AND topo < $2`, append(args, topo)
	} else {
		cond, args = ` AND origin_ts < $2`, append(args, p.BeforeTS)
	}
	if !p.DeleteLocal {
		cond += fmt.Sprintf(` AND sender NOT LIKE $%d`, len(args)+1)
		args = append(args, "%:"+s.opts.ServerName)
	}
	rows, err := s.db.Query(ctx, `SELECT event_id, pos, COALESCE(relates_to, '') FROM events
WHERE room_id = $1 AND state_key IS NULL`+cond+`
AND event_id NOT IN (SELECT event_id FROM room_extremities WHERE room_id = $1)`, args...)
	if err != nil {
		return nil, fmt.Errorf("events to purge in %s: %w", roomID, err)
	}
	var out []PurgedEvent
	var ids []string
	var positions []int64
	for rows.Next() {
		var e PurgedEvent
		var pos int64
		if err := rows.Scan(&e.EventID, &pos, &e.RelatesTo); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, e)
		ids = append(ids, e.EventID)
		positions = append(positions, pos)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	const batch = 500
	for i := 0; i < len(ids); i += batch {
		j := min(i+batch, len(ids))
		idb, posb := ids[i:j], positions[i:j]
		err := s.db.Write(ctx, func(tx *storage.Tx) error {
			if _, err := tx.Exec(ctx, `DELETE FROM event_search WHERE rowid IN ($1)`, posb); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM prev_events WHERE room_id = $1 AND event_id IN ($2)`, roomID, idb); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM prev_events WHERE room_id = $1 AND prev_event_id IN ($2)`, roomID, idb); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DELETE FROM events WHERE event_id IN ($1)`, idb)
			return err
		})
		if err != nil {
			return out[:i], fmt.Errorf("purge history of %s: %w", roomID, err)
		}
	}
	for _, id := range ids {
		s.pduCache.Remove(id)
	}
	logging.From(ctx).WithFields(map[string]any{"room_id": roomID, "events": len(ids)}).Warn("room history purged")
	return out, nil
}

// mxcPattern finds media URIs in event JSON.
var mxcPattern = regexp.MustCompile(`mxc://([A-Za-z0-9.:\[\]-]+)/([A-Za-z0-9_-]+)`)

// MediaInRoom lists the media IDs of this server's media that the room's
// stored events refer to (content.url, thumbnails, avatars, encrypted
// files: any mxc:// URI anywhere in an event).
func (s *Service) MediaInRoom(ctx context.Context, roomID string) ([]string, error) {
	if !validRoomID(roomID) {
		return nil, merr.NotFound("Unknown room %s", roomID)
	}
	if _, err := selectRoom(ctx, s.db, roomID); err != nil {
		if isNotFound(err) {
			return nil, merr.NotFound("Unknown room %s", roomID)
		}
		return nil, err
	}
	rows, err := s.db.Query(ctx, `SELECT json FROM events WHERE room_id = $1 AND json LIKE '%mxc://%'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("media of %s: %w", roomID, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	out := []string{}
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		for _, m := range mxcPattern.FindAllStringSubmatch(raw, -1) {
			if m[1] == s.opts.ServerName && !seen[m[2]] {
				seen[m[2]] = true
				out = append(out, m[2])
			}
		}
	}
	return out, rows.Err()
}
