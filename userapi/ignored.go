package userapi

import (
	"context"
	"encoding/json"

	"github.com/haven-chat/haven/internal/merr"
)

// TypeIgnoredUsers is the global account data type of a user's ignore list.
const TypeIgnoredUsers = "m.ignored_user_list"

// IgnoredUsers returns the users userID ignores (an empty set when none).
// The sets are cached: a change of the list (which holds the user's lock,
// as a load does) drops the user's entry after it commits, so a load never
// caches a list older than the last change. The set is shared: callers
// must not change it.
func (s *Service) IgnoredUsers(ctx context.Context, userID string) (map[string]struct{}, error) {
	// Every /sync response asks: a lookup does not reorder the cache.
	if set, ok := s.ignored.Peek(userID); ok {
		return set, nil
	}
	unlock := s.userLocks.Lock(userID)
	defer unlock()
	if set, ok := s.ignored.Get(userID); ok {
		return set, nil
	}
	content, err := s.GetAccountData(ctx, userID, "", TypeIgnoredUsers)
	if err != nil && !merr.Is(err, "M_NOT_FOUND") {
		return nil, err
	}
	set := parseIgnored(content)
	s.ignored.Put(userID, set)
	return set, nil
}

// parseIgnored reads the keys of ignored_users; anything malformed ignores
// nobody.
func parseIgnored(content json.RawMessage) map[string]struct{} {
	var c struct {
		Ignored map[string]json.RawMessage `json:"ignored_users"`
	}
	set := map[string]struct{}{}
	if len(content) == 0 || json.Unmarshal(content, &c) != nil {
		return set
	}
	for u := range c.Ignored {
		set[u] = struct{}{}
	}
	return set
}
