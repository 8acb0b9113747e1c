package userapi

import (
	"crypto/rand"
	"strings"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/merr"
)

// MaxUserIDBytes is the longest user ID the spec allows, sigil and server name included.
const MaxUserIDBytes = 255

// ValidLocalpart checks a localpart for a new account against the spec's
// grammar: not empty, only a-z 0-9 . _ = - / +, and a full user ID of at
// most 255 bytes. It answers M_INVALID_USERNAME.
func ValidLocalpart(localpart, serverName string) error {
	if localpart == "" {
		return merr.InvalidUsername("The username must not be empty")
	}
	for i := 0; i < len(localpart); i++ {
		if !localpartChar(localpart[i]) {
			return merr.InvalidUsername("The username may contain only the characters a-z, 0-9, '.', '_', '=', '-', '/' and '+'")
		}
	}
	if len(localpart)+len(serverName)+2 > MaxUserIDBytes {
		return merr.InvalidUsername("The user ID @%s:%s is longer than %d bytes", localpart, serverName, MaxUserIDBytes)
	}
	return nil
}

func localpartChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '.', '_', '=', '-', '/', '+':
		return true
	}
	return false
}

// UserID builds the user ID of a local localpart.
func (s *Service) UserID(localpart string) string {
	return "@" + localpart + ":" + s.opts.ServerName
}

// IsLocal tells whether a user ID belongs to this server.
func (s *Service) IsLocal(userID string) bool {
	_, server, ok := SplitUserID(userID)
	return ok && server == s.opts.ServerName
}

// SplitUserID splits @localpart:server. The server name may contain a port,
// so the split is at the first colon; it must be a valid server name.
func SplitUserID(userID string) (localpart, server string, ok bool) {
	lp, srv, ok := ids.Split(userID, '@')
	if !ok || lp == "" {
		return "", "", false
	}
	return lp, srv, true
}

// resolveLogin turns what a user typed at login (a localpart or a full user
// ID, any case) into a local user ID. ok is false if it cannot name a local user.
func (s *Service) resolveLogin(user string) (string, bool) {
	user = strings.TrimSpace(user)
	if user == "" {
		return "", false
	}
	lp := user
	if strings.HasPrefix(user, "@") {
		l, server, ok := SplitUserID(user)
		if !ok || !strings.EqualFold(server, s.opts.ServerName) {
			return "", false
		}
		lp = l
	}
	lp = strings.ToLower(lp)
	if len(lp)+len(s.opts.ServerName)+2 > MaxUserIDBytes || strings.ContainsAny(lp, ":\x00") {
		return "", false
	}
	return s.UserID(lp), true
}

const randomAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// randomString returns n characters drawn uniformly from alphabet.
func randomString(n int, alphabet string) string {
	out := make([]byte, n)
	buf := make([]byte, 1)
	limit := 256 - 256%len(alphabet)
	for i := 0; i < n; {
		_, _ = rand.Read(buf)
		if int(buf[0]) >= limit {
			continue
		}
		out[i] = alphabet[int(buf[0])%len(alphabet)]
		i++
	}
	return string(out)
}

// randomLocalpart is the localpart of an account registered without a username.
func randomLocalpart() string { return "u" + randomString(11, randomAlphabet) }

// randomDeviceID is a new device ID: ten upper-case letters, as other servers make them.
func randomDeviceID() string { return randomString(10, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") }
