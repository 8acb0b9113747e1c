package roomserver

import (
	"context"
	"encoding/json"
	"net/netip"
	"path"
	"strings"

	"github.com/haven-chat/haven/internal/merr"
)

// serverACL is the content of m.room.server_acl.
type serverACL struct {
	Allow           []string `json:"allow"`
	Deny            []string `json:"deny"`
	AllowIPLiterals *bool    `json:"allow_ip_literals"`
}

// allows applies the spec's rules: the name is matched without its port;
// an IP literal needs allow_ip_literals (true when absent); a deny match
// refuses, then an allow match admits; anything else is refused.
func (a serverACL) allows(server string) bool {
	host := server
	if h, _, ok := cutPort(server); ok {
		host = h
	}
	host = strings.ToLower(host)
	if a.AllowIPLiterals != nil && !*a.AllowIPLiterals {
		if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
			return false
		}
	}
	for _, g := range a.Deny {
		if globMatch(g, host) {
			return false
		}
	}
	for _, g := range a.Allow {
		if globMatch(g, host) {
			return true
		}
	}
	return false
}

// cutPort splits host:port (IPv6 literals in brackets).
func cutPort(server string) (host, port string, ok bool) {
	i := strings.LastIndexByte(server, ':')
	if i < 0 || strings.HasSuffix(server, "]") {
		return server, "", false
	}
	return server[:i], server[i+1:], true
}

// globMatch matches a server-ACL glob (* any run, ? one character),
// case-insensitively; a malformed glob matches nothing.
func globMatch(glob, name string) bool {
	// path.Match gives * and ? their meaning; its other metacharacters
	// are escaped so they match themselves.
	esc := strings.NewReplacer(`\`, `\\`, `[`, `\[`, `]`, `\]`).Replace(strings.ToLower(glob))
	ok, err := path.Match(esc, name)
	return err == nil && ok
}

// ServerAllowed tells whether the room's m.room.server_acl lets a server
// take part (a room without one lets every server). An unknown room is
// M_NOT_FOUND.
func (s *Service) ServerAllowed(ctx context.Context, roomID, server string) (bool, error) {
	allowed := true
	err := s.withRoom(ctx, roomID, func(r *room) error {
		r.mu.RLock()
		p := r.state[stateKey{"m.room.server_acl", ""}]
		r.mu.RUnlock()
		if p == nil {
			return nil
		}
		var acl serverACL
		if err := json.Unmarshal(p.Content(), &acl); err != nil {
			return nil // an unreadable ACL is no ACL
		}
		allowed = acl.allows(server)
		return nil
	})
	return allowed, err
}

// CheckServerACL is ServerAllowed as an error: 403 M_FORBIDDEN for a
// server the room's ACL refuses.
func (s *Service) CheckServerACL(ctx context.Context, roomID, server string) error {
	ok, err := s.ServerAllowed(ctx, roomID, server)
	if err != nil {
		return err
	}
	if !ok {
		return merr.Forbidden("Server %s is banned from room %s by its server ACL", server, roomID)
	}
	return nil
}
