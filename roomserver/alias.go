package roomserver

import (
	"context"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

func (s *Service) checkAlias(alias string) error {
	if !strings.HasPrefix(alias, "#") || !strings.Contains(alias, ":") || len(alias) > 255 {
		return merr.InvalidParam("Invalid room alias %q", alias)
	}
	local := alias[1:strings.LastIndex(alias, ":")]
	if !validAliasLocalpart(local) {
		return merr.InvalidParam("Invalid room alias %q", alias)
	}
	return nil
}

// ResolveAlias returns the room an alias points to.
func (s *Service) ResolveAlias(ctx context.Context, alias string) (string, error) {
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
	if !strings.HasSuffix(alias, ":"+s.opts.ServerName) {
		return merr.InvalidParam("Aliases must end in :%s", s.opts.ServerName)
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
	return nil
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
