package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// UpgradeRequest is the body of POST /rooms/{roomId}/upgrade.
type UpgradeRequest struct {
	NewVersion string `json:"new_version"`
	// AdditionalCreators are further creators of the new room, for room
	// versions with privileged creators (12); ignored for the others.
	AdditionalCreators []string `json:"additional_creators"`
}

// transferredState are the state events (empty state key) copied from the
// old room into its replacement; power levels are handled on their own.
var transferredState = []string{
	spec.MRoomJoinRules, spec.MRoomHistoryVisibility, spec.MRoomGuestAccess,
	spec.MRoomName, spec.MRoomTopic, spec.MRoomAvatar, spec.MRoomEncryption,
	"m.room.server_acl", spec.MRoomCanonicalAlias,
}

// transferredKeyed are state types copied with every state key (a space
// keeps its children and parents).
var transferredKeyed = []string{spec.MSpaceChild, spec.MSpaceParent}

// UpgradeRoom replaces a room by a new room of another version: the new
// room's create event names the old room as predecessor, the old room's
// transferable state, power levels, bans and pending invites (with their
// is_direct) are copied, its local aliases move, and the old room gets an
// m.room.tombstone pointing to the new one and power levels that keep
// ordinary members from speaking or inviting. Members whose m.direct lists
// the old room get the new one beside it (Options.Direct).
// It returns the new room's ID.
func (s *Service) UpgradeRoom(ctx context.Context, sender, roomID string, req UpgradeRequest) (string, error) {
	if req.NewVersion == "" {
		return "", merr.MissingParam("new_version is required")
	}
	newVer, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(req.NewVersion))
	if err != nil || !gomatrixserverlib.StableRoomVersion(gomatrixserverlib.RoomVersion(req.NewVersion)) {
		return "", merr.UnsupportedRoomVersion("Room version %q is not supported", req.NewVersion)
	}
	if len(req.AdditionalCreators) > 100 {
		return "", merr.InvalidParam("At most 100 additional_creators")
	}
	var extraCreators []string
	seen := map[string]bool{sender: true}
	for _, u := range req.AdditionalCreators {
		if !ValidUserID(u) || strings.ContainsRune(u, 0) {
			return "", merr.InvalidParam("Invalid user ID in additional_creators: %q", u)
		}
		if !seen[u] {
			seen[u] = true
			extraCreators = append(extraCreators, u)
		}
	}
	if !newVer.PrivilegedCreators() {
		extraCreators = nil
	}
	if !storableRoomID(roomID) {
		return "", merr.InvalidParam("Invalid room ID %q", roomID)
	}
	published, err := s.Published(ctx, roomID)
	if err != nil {
		return "", err
	}
	var newID string
	err = s.withRoom(ctx, roomID, func(old *room) error {
		if membershipOf(old, sender) != spec.Join {
			return merr.Forbidden("You are not in this room")
		}
		pl := powerLevels(old)
		if pl.UserLevel(spec.SenderID(sender)) < pl.EventLevel("m.room.tombstone", true) {
			return merr.Forbidden("You do not have the power to upgrade this room")
		}
		id, err := s.upgradeLocked(ctx, sender, old, newVer, extraCreators, published)
		newID = id
		return err
	})
	if err != nil {
		return "", err
	}
	logging.From(ctx).WithFields(map[string]any{"room_id": roomID, "user_id": sender, "replacement_room": newID, "room_version": req.NewVersion}).Info("room upgraded")
	return newID, nil
}

// upgradeLocked does the upgrade holding the old room's lock. The new
// room's lock is taken inside it: nobody else can know that room yet.
func (s *Service) upgradeLocked(ctx context.Context, sender string, old *room, newVer gomatrixserverlib.IRoomVersion, extraCreators []string, published bool) (string, error) {
	empty := ""
	createContent := map[string]json.RawMessage{"room_version": json.RawMessage(mustJSON(string(newVer.Version())))}
	if oc := old.state[stateKey{spec.MRoomCreate, ""}]; oc != nil {
		var c map[string]json.RawMessage
		if json.Unmarshal(oc.Content(), &c) == nil {
			for _, k := range []string{"type", "m.federate"} {
				if v, ok := c[k]; ok {
					createContent[k] = v
				}
			}
		}
	}
	if !versionDropsCreator(newVer) {
		createContent["creator"] = json.RawMessage(mustJSON(sender))
	}
	if len(extraCreators) > 0 {
		createContent["additional_creators"] = json.RawMessage(mustJSON(extraCreators))
	}

	oldDraft := newDraft(old)
	nr := &room{version: newVer, state: map[stateKey]gomatrixserverlib.PDU{}}
	nd := newDraft(nr)
	tombstone := func(replacement string) (gomatrixserverlib.PDU, error) {
		return s.add(oldDraft, &gomatrixserverlib.ProtoEvent{SenderID: sender, Type: "m.room.tombstone", StateKey: &empty,
			Content: mustJSON(map[string]string{"body": "This room has been replaced", "replacement_room": replacement})}, eventMeta{})
	}
	addCreate := func(predecessor map[string]string) (gomatrixserverlib.PDU, error) {
		createContent["predecessor"] = json.RawMessage(mustJSON(predecessor))
		return s.add(nd, &gomatrixserverlib.ProtoEvent{SenderID: sender, Type: spec.MRoomCreate, StateKey: &empty, Content: mustJSON(createContent)}, eventMeta{})
	}
	if !newVer.DomainlessRoomIDs() {
		// The new room's ID is known first: the predecessor can name the tombstone.
		nr.id = "!" + randomString(18) + ":" + s.opts.ServerName
		tomb, err := tombstone(nr.id)
		if err != nil {
			return "", err
		}
		if _, err := addCreate(map[string]string{"room_id": old.id, "event_id": tomb.EventID()}); err != nil {
			return "", err
		}
	} else {
		// The new room's ID is the hash of its create event, which therefore
		// cannot name the tombstone.
		createPDU, err := addCreate(map[string]string{"room_id": old.id})
		if err != nil {
			return "", err
		}
		nr.id = createPDU.RoomID().String()
		if _, err := tombstone(nr.id); err != nil {
			return "", err
		}
	}
	unlock := s.locks.Lock(nr.id)
	defer unlock()

	if _, err := s.addMember(ctx, nd, sender, sender, spec.Join, nil, nil); err != nil {
		return "", err
	}
	oldPL := oldPowerLevels(old)
	creators := append([]string{sender}, extraCreators...)
	final := upgradedPowerLevels(old, oldPL, newVer, creators)
	addState := func(typ, key string, content spec.RawJSON) error {
		k := key
		_, err := s.add(nd, &gomatrixserverlib.ProtoEvent{SenderID: sender, Type: typ, StateKey: &k, Content: content}, eventMeta{})
		return err
	}
	// The upgrader needs the power to copy everything; in versions without
	// privileged creators they get it for the time of the copy.
	temp := final
	if !newVer.PrivilegedCreators() {
		if need := highestLevel(final); final.UserLevel(spec.SenderID(sender)) < need {
			temp = clonePowerLevels(final)
			temp.Users[sender] = need
		}
	}
	if err := addState(spec.MRoomPowerLevels, "", mustJSON(powerLevelsJSON(temp))); err != nil {
		return "", err
	}
	for _, typ := range transferredState {
		if p := old.state[stateKey{typ, ""}]; p != nil {
			if err := addState(typ, "", spec.RawJSON(p.Content())); err != nil {
				return "", err
			}
		}
	}
	for _, k := range sortedStateKeys(old.state) {
		for _, typ := range transferredKeyed {
			if k.typ == typ {
				if err := addState(k.typ, k.key, spec.RawJSON(old.state[k].Content())); err != nil {
					return "", err
				}
			}
		}
	}
	// Bans follow the room.
	for _, k := range sortedStateKeys(old.state) {
		if k.typ != spec.MRoomMember || k.key == sender {
			continue
		}
		if m, _ := old.state[k].Membership(); m == spec.Ban {
			var c memberContent
			_ = json.Unmarshal(old.state[k].Content(), &c)
			if _, err := s.addMember(ctx, nd, sender, k.key, spec.Ban, reasonFields(c.Reason, false), nil); err != nil {
				return "", err
			}
		}
	}
	// Pending invites follow the room too (an invitee of a direct room who
	// has not answered yet would otherwise be left behind), with their
	// is_direct.
	for _, k := range sortedStateKeys(old.state) {
		if k.typ != spec.MRoomMember || k.key == sender || ids.ServerOf(k.key, '@') != s.opts.ServerName {
			continue
		}
		if m, _ := old.state[k].Membership(); m == spec.Invite {
			var c memberContent
			_ = json.Unmarshal(old.state[k].Content(), &c)
			if _, err := s.addMember(ctx, nd, sender, k.key, spec.Invite, reasonFields("", c.IsDirect), nil); err != nil {
				return "", err
			}
		}
	}
	if temp.UserLevel(spec.SenderID(sender)) != final.UserLevel(spec.SenderID(sender)) {
		if err := addState(spec.MRoomPowerLevels, "", mustJSON(powerLevelsJSON(final))); err != nil {
			return "", err
		}
	}

	// The old room: its aliases are gone, and ordinary members may no
	// longer speak or invite, so that people move. Both only if the
	// upgrader has the power; the tombstone is already in the draft.
	if ca := old.state[stateKey{spec.MRoomCanonicalAlias, ""}]; ca != nil && string(ca.Content()) != "{}" {
		_, _ = s.add(oldDraft, &gomatrixserverlib.ProtoEvent{SenderID: sender, Type: spec.MRoomCanonicalAlias, StateKey: &empty, Content: spec.RawJSON("{}")}, eventMeta{})
	}
	if old.state[stateKey{spec.MRoomPowerLevels, ""}] != nil {
		if restricted, changed := restrictPowerLevels(oldPL); changed {
			_, _ = s.add(oldDraft, &gomatrixserverlib.ProtoEvent{SenderID: sender, Type: spec.MRoomPowerLevels, StateKey: &empty, Content: mustJSON(powerLevelsJSON(restricted))}, eventMeta{})
		}
	}

	extra := func(ctx context.Context, tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, nr.id, old.id); err != nil {
			return fmt.Errorf("move aliases of %s: %w", old.id, err)
		}
		if published {
			if _, err := tx.Exec(ctx, `UPDATE rooms SET published = $1 WHERE room_id = $2`, true, nr.id); err != nil {
				return fmt.Errorf("publish room %s: %w", nr.id, err)
			}
			if _, err := tx.Exec(ctx, `UPDATE rooms SET published = $1 WHERE room_id = $2`, false, old.id); err != nil {
				return fmt.Errorf("unpublish room %s: %w", old.id, err)
			}
		}
		return nil
	}
	if _, err := s.commit(ctx, nd, &roomRow{version: string(newVer.Version())}, extra); err != nil {
		return "", err
	}
	if _, err := s.commit(ctx, oldDraft, nil, nil); err != nil {
		// The new room exists and has the aliases; the old one lacks its
		// tombstone. Retrying the upgrade creates another new room.
		logging.From(ctx).WithError(err).WithFields(map[string]any{"room_id": old.id, "replacement_room": nr.id}).Error("room upgrade: new room created, tombstone not stored")
		return "", err
	}
	s.moveDirect(ctx, old, nr.id)
	return nr.id, nil
}

// moveDirect makes the new room direct for the old room's local members
// (joined or invited) whose m.direct lists the old room, as Synapse does.
// A failure is logged: the upgrade itself is done.
func (s *Service) moveDirect(ctx context.Context, old *room, newID string) {
	if s.opts.Direct == nil {
		return
	}
	for _, k := range sortedStateKeys(old.state) {
		if k.typ != spec.MRoomMember || ids.ServerOf(k.key, '@') != s.opts.ServerName {
			continue
		}
		if m, _ := old.state[k].Membership(); m != spec.Join && m != spec.Invite {
			continue
		}
		if err := s.opts.Direct.AddDirectRoom(ctx, k.key, old.id, newID); err != nil {
			logging.From(ctx).WithError(err).WithFields(map[string]any{"user_id": k.key, "room_id": old.id, "replacement_room": newID}).Warn("room upgrade: m.direct not updated")
		}
	}
}

// oldPowerLevels parses the old room's power levels as they are written
// (without the implicit levels of privileged creators), with integer values.
func oldPowerLevels(old *room) gomatrixserverlib.PowerLevelContent {
	if p := old.state[stateKey{spec.MRoomPowerLevels, ""}]; p != nil {
		if pl, err := p.PowerLevels(); err == nil {
			return clonePowerLevels(*pl)
		}
	}
	var pl gomatrixserverlib.PowerLevelContent
	pl.Defaults()
	if c := old.state[stateKey{spec.MRoomCreate, ""}]; c != nil && !old.version.PrivilegedCreators() {
		pl.Users = map[string]int64{string(c.SenderID()): 100}
	}
	return clonePowerLevels(pl)
}

// upgradedPowerLevels are the old room's power levels made valid for the new
// room version: creators of a version with privileged creators may not be
// listed in users; creators coming from such a version get 100 elsewhere.
func upgradedPowerLevels(old *room, pl gomatrixserverlib.PowerLevelContent, newVer gomatrixserverlib.IRoomVersion, newCreators []string) gomatrixserverlib.PowerLevelContent {
	out := clonePowerLevels(pl)
	if old.version.PrivilegedCreators() && !newVer.PrivilegedCreators() {
		if c := old.state[stateKey{spec.MRoomCreate, ""}]; c != nil {
			var cc struct {
				Additional []string `json:"additional_creators"`
			}
			_ = json.Unmarshal(c.Content(), &cc)
			for _, u := range append([]string{string(c.SenderID())}, cc.Additional...) {
				if _, ok := out.Users[u]; !ok {
					out.Users[u] = 100
				}
			}
		}
	}
	if newVer.PrivilegedCreators() {
		for _, u := range newCreators {
			delete(out.Users, u)
		}
	}
	return out
}

// restrictPowerLevels raises events_default and invite of a replaced room to
// the greater of 50 and users_default+1.
func restrictPowerLevels(pl gomatrixserverlib.PowerLevelContent) (gomatrixserverlib.PowerLevelContent, bool) {
	out := clonePowerLevels(pl)
	level := max(int64(50), pl.UsersDefault+1)
	changed := false
	if out.EventsDefault < level {
		out.EventsDefault, changed = level, true
	}
	if out.Invite < level {
		out.Invite, changed = level, true
	}
	return out, changed
}

// highestLevel is the level needed to send any event the power levels name.
func highestLevel(pl gomatrixserverlib.PowerLevelContent) int64 {
	need := max(pl.Ban, pl.Kick, pl.Redact, pl.Invite, pl.StateDefault, pl.EventsDefault)
	for _, v := range pl.Events {
		need = max(need, v)
	}
	return need
}

func clonePowerLevels(pl gomatrixserverlib.PowerLevelContent) gomatrixserverlib.PowerLevelContent {
	out := pl
	out.Users = make(map[string]int64, len(pl.Users)+1)
	for k, v := range pl.Users {
		out.Users[k] = v
	}
	out.Events = make(map[string]int64, len(pl.Events))
	for k, v := range pl.Events {
		out.Events[k] = v
	}
	out.Notifications = make(map[string]int64, len(pl.Notifications))
	for k, v := range pl.Notifications {
		out.Notifications[k] = v
	}
	return out
}

// powerLevelsJSON is the content of an m.room.power_levels event, with
// integer levels (which every room version accepts).
func powerLevelsJSON(pl gomatrixserverlib.PowerLevelContent) map[string]any {
	out := map[string]any{
		"ban": pl.Ban, "invite": pl.Invite, "kick": pl.Kick, "redact": pl.Redact,
		"users": pl.Users, "users_default": pl.UsersDefault,
		"events": pl.Events, "events_default": pl.EventsDefault, "state_default": pl.StateDefault,
	}
	if len(pl.Notifications) > 0 {
		out["notifications"] = pl.Notifications
	}
	return out
}
