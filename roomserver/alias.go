package roomserver

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// checkAlias refuses what is not a room alias (M_INVALID_PARAM, the
// spec's answer for an invalid alias).
func (s *Service) checkAlias(alias string) error {
	if !ids.ValidRoomAlias(alias) {
		return merr.InvalidParam("Invalid room alias %q", alias)
	}
	return nil
}

// ResolveAlias returns the room an alias points to. An unknown alias in an
// application service's namespace is asked of the service first.
func (s *Service) ResolveAlias(ctx context.Context, alias string) (string, error) {
	id, err := s.resolveLocal(ctx, alias)
	if merr.Is(err, "M_NOT_FOUND") && s.opts.Aliases != nil && s.opts.Aliases.QueryAlias(ctx, alias) {
		id, err = s.resolveLocal(ctx, alias)
	}
	return id, err
}

// mayCreateAlias refuses an alias held by an application service.
func (s *Service) mayCreateAlias(userID, alias string) error {
	if s.opts.Aliases == nil {
		return nil
	}
	return s.opts.Aliases.MayCreateAlias(userID, alias)
}

// resolveLocal returns the room an alias points to in room_aliases.
func (s *Service) resolveLocal(ctx context.Context, alias string) (string, error) {
	if err := s.checkAlias(alias); err != nil {
		return "", err
	}
	var id string
	err := s.db.QueryRow(ctx, `SELECT room_id FROM room_aliases WHERE alias = $1`, alias).Scan(&id)
	if isNoRows(err) {
		return "", merr.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return "", fmt.Errorf("resolve alias %s: %w", alias, err)
	}
	return id, nil
}

// SetAlias creates an alias for a room the user is joined to.
func (s *Service) SetAlias(ctx context.Context, userID, alias, roomID string) error {
	if err := s.checkAlias(alias); err != nil {
		return err
	}
	if ids.ServerOf(alias, '#') != s.opts.ServerName {
		return merr.InvalidParam("Aliases must end in :%s", s.opts.ServerName)
	}
	if err := s.mayCreateAlias(userID, alias); err != nil {
		return err
	}
	m, _, err := s.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m != spec.Join {
		return merr.Forbidden("You must be in the room to give it an alias")
	}
	_, err = s.db.Exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1,$2,$3)`, alias, roomID, userID)
	if storage.IsUniqueViolation(err) {
		return merr.Custom(409, "M_UNKNOWN", "Room alias %s already exists", alias)
	}
	if err != nil {
		return fmt.Errorf("insert alias %s: %w", alias, err)
	}
	return nil
}

// DeleteAlias removes an alias; allowed for its creator, admins and users who
// may change the room's canonical alias.
func (s *Service) DeleteAlias(ctx context.Context, userID string, isAdmin bool, alias string) error {
	if err := s.checkAlias(alias); err != nil {
		return err
	}
	var roomID, creator string
	err := s.db.QueryRow(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	if isNoRows(err) {
		return merr.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return fmt.Errorf("select alias %s: %w", alias, err)
	}
	if creator != userID && !isAdmin {
		allowed := false
		_ = s.withRoom(ctx, roomID, func(r *room) error {
			pl := powerLevels(r)
			allowed = membershipOf(r, userID) == spec.Join && pl.UserLevel(spec.SenderID(userID)) >= pl.EventLevel(spec.MRoomCanonicalAlias, true)
			return nil
		})
		if !allowed {
			return merr.Forbidden("You may not delete this alias")
		}
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias); err != nil {
		return fmt.Errorf("delete alias %s: %w", alias, err)
	}
	s.dropCanonicalAlias(ctx, userID, roomID, alias)
	return nil
}

// canonicalAliases reads the aliases of m.room.canonical_alias content:
// alias (a string, null or absent) and alt_aliases (a list of strings).
func canonicalAliases(content []byte) (alias string, alt []string, err error) {
	var c struct {
		Alias      json.RawMessage `json:"alias"`
		AltAliases json.RawMessage `json:"alt_aliases"`
	}
	if json.Unmarshal(content, &c) != nil {
		return "", nil, merr.BadJSON("Invalid m.room.canonical_alias content")
	}
	if len(c.Alias) > 0 && string(c.Alias) != "null" && json.Unmarshal(c.Alias, &alias) != nil {
		return "", nil, merr.InvalidParam("alias must be a room alias")
	}
	if len(c.AltAliases) > 0 && string(c.AltAliases) != "null" && json.Unmarshal(c.AltAliases, &alt) != nil {
		return "", nil, merr.InvalidParam("alt_aliases must be a list of room aliases")
	}
	return alias, alt, nil
}

// checkCanonicalAlias checks the aliases that an m.room.canonical_alias
// event adds to the room's current one: each must be an alias
// (M_INVALID_PARAM) that points to the room (M_BAD_ALIAS). The aliases the
// current event has pass as they are, so that a client can drop one while
// another of them has been deleted meanwhile.
func (s *Service) checkCanonicalAlias(ctx context.Context, roomID string, content []byte) error {
	alias, alt, err := canonicalAliases(content)
	if err != nil {
		return err
	}
	had := map[string]bool{}
	_ = s.withRoom(ctx, roomID, func(r *room) error {
		if ev := r.state[stateKey{spec.MRoomCanonicalAlias, ""}]; ev != nil {
			a, alt, _ := canonicalAliases(ev.Content())
			had[a] = true
			for _, x := range alt {
				had[x] = true
			}
		}
		return nil
	})
	if alias != "" {
		alt = append(alt, alias)
	}
	for _, a := range alt {
		if had[a] {
			continue
		}
		if !ids.ValidRoomAlias(a) {
			return merr.InvalidParam("%q is not a room alias", a)
		}
		id, err := s.ResolveAlias(ctx, a)
		if merr.Is(err, "M_NOT_FOUND") || err == nil && id != roomID {
			return merr.Custom(400, "M_BAD_ALIAS", "Alias %s does not point to this room", a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// dropCanonicalAlias takes a deleted alias out of the room's
// m.room.canonical_alias event (alias and alt_aliases), sent by the user
// who deleted it, as Synapse does. If that user may not send the event,
// the event stays as it is: the alias is deleted all the same.
func (s *Service) dropCanonicalAlias(ctx context.Context, userID, roomID, alias string) {
	var raw []byte
	_ = s.withRoom(ctx, roomID, func(r *room) error {
		if ev := r.state[stateKey{spec.MRoomCanonicalAlias, ""}]; ev != nil {
			raw = ev.Content()
		}
		return nil
	})
	var content map[string]json.RawMessage
	cur, alt, err := canonicalAliases(raw)
	if raw == nil || err != nil || json.Unmarshal(raw, &content) != nil {
		return
	}
	changed := false
	if cur == alias {
		delete(content, "alias")
		changed = true
	}
	kept := make([]string, 0, len(alt))
	for _, a := range alt {
		if a != alias {
			kept = append(kept, a)
		}
	}
	if len(kept) < len(alt) {
		changed = true
		if len(kept) == 0 {
			delete(content, "alt_aliases")
		} else {
			content["alt_aliases"] = json.RawMessage(mustJSON(kept))
		}
	}
	if !changed {
		return
	}
	empty := ""
	if _, err := s.Send(ctx, Sender{UserID: userID}, SendRequest{RoomID: roomID, Type: spec.MRoomCanonicalAlias, StateKey: &empty, Content: json.RawMessage(mustJSON(content))}); err != nil {
		logging.From(ctx).WithError(err).WithFields(logrus.Fields{"room_id": roomID, "user_id": userID}).Info("deleted alias left in the canonical alias event")
	}
}

// AliasesOf lists a room's local aliases.
func (s *Service) AliasesOf(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, fmt.Errorf("aliases of %s: %w", roomID, err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Published tells whether a room is in the public room directory.
func (s *Service) Published(ctx context.Context, roomID string) (bool, error) {
	var p bool
	err := s.db.QueryRow(ctx, `SELECT published FROM rooms WHERE room_id = $1`, roomID).Scan(&p)
	if isNoRows(err) {
		return false, merr.NotFound("Unknown room %s", roomID)
	}
	return p, err
}

// SetPublished puts a room in the public directory or takes it out. Room
// admins (who may change the canonical alias) and server admins may.
func (s *Service) SetPublished(ctx context.Context, userID string, isAdmin bool, roomID string, published bool) error {
	if !isAdmin {
		allowed := false
		if err := s.withRoom(ctx, roomID, func(r *room) error {
			pl := powerLevels(r)
			allowed = membershipOf(r, userID) == spec.Join && pl.UserLevel(spec.SenderID(userID)) >= pl.EventLevel(spec.MRoomCanonicalAlias, true)
			return nil
		}); err != nil {
			return err
		}
		if !allowed {
			return merr.Forbidden("You may not change this room's visibility")
		}
	}
	_, err := s.db.Exec(ctx, `UPDATE rooms SET published = $1 WHERE room_id = $2`, published, roomID)
	return err
}
