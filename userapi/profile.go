package userapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Profile limits, in bytes.
const (
	MaxDisplayNameBytes = 256
	MaxAvatarURLBytes   = 1000
)

// Profile is a user's display name and avatar; empty means not set.
type Profile struct {
	DisplayName string
	AvatarURL   string
}

type profileEntry struct {
	Profile
	deactivated bool
}

// loadProfile returns a local account's profile, from the cache or the
// database; storage.ErrNotFound when there is no such account.
func (s *Service) loadProfile(ctx context.Context, userID string) (profileEntry, error) {
	if p, ok := s.profiles.Get(userID); ok {
		return p, nil
	}
	// Load under the user's lock so a concurrent change cannot be
	// overwritten in the cache by what we read before it.
	unlock := s.userLocks.Lock(userID)
	defer unlock()
	if p, ok := s.profiles.Peek(userID); ok {
		return p, nil
	}
	var p profileEntry
	var dn, av sql.NullString
	err := s.db.QueryRow(ctx, `SELECT a.deactivated, p.displayname, p.avatar_url FROM accounts a
LEFT JOIN profiles p ON p.user_id = a.user_id WHERE a.user_id = $1`, userID).Scan(&p.deactivated, &dn, &av)
	if errors.Is(err, sql.ErrNoRows) {
		return p, storage.ErrNotFound
	}
	if err != nil {
		return p, fmt.Errorf("select profile %s: %w", userID, err)
	}
	p.DisplayName, p.AvatarURL = dn.String, av.String
	s.profiles.Put(userID, p)
	return p, nil
}

// GetProfile returns the profile of a local, active user, or M_NOT_FOUND.
func (s *Service) GetProfile(ctx context.Context, userID string) (Profile, error) {
	if !s.IsLocal(userID) {
		return Profile{}, merr.NotFound("Profile not found")
	}
	p, err := s.loadProfile(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) && s.opts.AppServices != nil && s.opts.AppServices.QueryUser(ctx, userID) {
		// An application service made the user when asked about it.
		p, err = s.loadProfile(ctx, userID)
	}
	if errors.Is(err, storage.ErrNotFound) || (err == nil && p.deactivated) {
		return Profile{}, merr.NotFound("Profile not found")
	}
	if err != nil {
		return Profile{}, err
	}
	return p.Profile, nil
}

// Profile gives the display name and avatar URL that go into a user's
// membership events (roomserver.ProfileSource). Unknown users have none.
func (s *Service) Profile(ctx context.Context, userID string) (displayname, avatarURL string, err error) {
	if !s.IsLocal(userID) {
		return "", "", nil
	}
	p, err := s.loadProfile(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	return p.DisplayName, p.AvatarURL, nil
}

// SetDisplayName sets (or, with "", clears) the user's display name.
func (s *Service) SetDisplayName(ctx context.Context, userID, name string) error {
	if len(name) > MaxDisplayNameBytes {
		return merr.BadJSON("The display name is longer than %d bytes", MaxDisplayNameBytes)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return merr.InvalidParam("The display name must not contain NUL characters")
	}
	return s.setProfileField(ctx, userID, "displayname", name)
}

// SetAvatarURL sets (or, with "", clears) the user's avatar. Like Synapse,
// it takes any URL, not only mxc:// ones (clients show only those; bridges
// and old clients set others): only its length and a NUL byte, which the
// database cannot store, are refused.
func (s *Service) SetAvatarURL(ctx context.Context, userID, url string) error {
	if len(url) > MaxAvatarURLBytes {
		return merr.BadJSON("The avatar URL is longer than %d bytes", MaxAvatarURLBytes)
	}
	if strings.IndexByte(url, 0) >= 0 {
		return merr.InvalidParam("The avatar URL must not contain a NUL byte")
	}
	return s.setProfileField(ctx, userID, "avatar_url", url)
}

func (s *Service) setProfileField(ctx context.Context, userID, column, value string) error {
	var upsert string
	switch column {
	case "displayname":
		upsert = `INSERT INTO profiles (user_id, displayname) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname`
	case "avatar_url":
		upsert = `INSERT INTO profiles (user_id, avatar_url) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET avatar_url = excluded.avatar_url`
	default:
		return fmt.Errorf("unknown profile field %s", column)
	}
	unlock := s.userLocks.Lock(userID)
	defer unlock()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		var deactivated bool
		err := tx.QueryRow(ctx, `SELECT deactivated FROM accounts WHERE user_id = $1`, userID).Scan(&deactivated)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && deactivated) {
			return merr.NotFound("Unknown user %s", userID)
		}
		if err != nil {
			return fmt.Errorf("select account %s: %w", userID, err)
		}
		if _, err := tx.Exec(ctx, upsert, userID, nullable(value)); err != nil {
			return fmt.Errorf("set %s of %s: %w", column, userID, err)
		}
		return nil
	})
	s.profiles.Remove(userID)
	if err != nil {
		return err
	}
	s.broadcast(ctx, invalidation{Profile: userID})
	return nil
}
