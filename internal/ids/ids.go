// Package ids parses and validates Matrix identifiers by the grammar of the
// spec's appendix: server names (a DNS name, an IPv4 address or a bracketed
// IPv6 address, with an optional port), user IDs, room aliases and room
// IDs. Every package that checks an identifier or takes its server name
// apart uses these, so that "@alice:example.com:8448" and
// "#room:[::1]:8448" mean the same everywhere.
//
// It has no state and starts no goroutines.
package ids

import (
	"net"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// MaxIDBytes is the longest identifier the spec allows, sigil and server name included.
const MaxIDBytes = 255

// maxServerName leaves room for a sigil, a localpart and the colon.
const maxServerName = 230

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$`)

// ValidServerName reports whether s is a server name: a DNS name, an IPv4
// address or a bracketed IPv6 address, optionally followed by ":" and a
// port (1 to 65535).
func ValidServerName(s string) bool {
	if s == "" || len(s) > maxServerName {
		return false
	}
	host, port, hasPort := s, "", false
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		host, port, hasPort = s[1:end], "", false
		switch rest := s[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			port, hasPort = rest[1:], true
		default:
			return false
		}
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil || strings.ContainsRune(host, '%') {
			return false
		}
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port, hasPort = s[:i], s[i+1:], true
		}
		if !hostnameRE.MatchString(host) {
			return false
		}
	}
	if hasPort {
		if port == "" || len(port) > 5 || strings.TrimLeft(port, "0123456789") != "" {
			return false
		}
		if n, _ := strconv.Atoi(port); n < 1 || n > 65535 {
			return false
		}
	}
	return true
}

// Split takes an identifier "<sigil><opaque>:<server name>" apart at its
// first colon (the part before it cannot hold one; the server name can,
// before its port). ok is false when the sigil, the colon or a valid
// server name is missing, or the whole is longer than MaxIDBytes.
func Split(id string, sigil byte) (opaque, server string, ok bool) {
	if len(id) < 2 || len(id) > MaxIDBytes || id[0] != sigil {
		return "", "", false
	}
	opaque, server, ok = strings.Cut(id[1:], ":")
	if !ok || !ValidServerName(server) {
		return "", "", false
	}
	return opaque, server, true
}

// ServerOf returns the server name of an identifier with the sigil, or ""
// when it is not one.
func ServerOf(id string, sigil byte) string {
	_, server, _ := Split(id, sigil)
	return server
}

// ValidUserID reports whether s is a user ID: "@", a localpart, ":" and a
// server name. The localpart may use any printable ASCII character but
// ":" (the spec's historical grammar, which other servers' users may
// still have; new local accounts get the stricter one at registration).
func ValidUserID(s string) bool {
	lp, _, ok := Split(s, '@')
	if !ok || lp == "" {
		return false
	}
	for i := 0; i < len(lp); i++ {
		if c := lp[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// ValidAliasLocalpart reports whether s can be the localpart of a room
// alias: not empty, at most 200 bytes, without ":", "#", white space or
// control characters (any other Unicode is fine: "#☕:example.org").
func ValidAliasLocalpart(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, r := range s {
		if r == ':' || r == '#' || r == unicode.ReplacementChar || unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// ValidRoomAlias reports whether s is a room alias: "#", a localpart (see
// ValidAliasLocalpart), ":" and a server name.
func ValidRoomAlias(s string) bool {
	lp, _, ok := Split(s, '#')
	return ok && ValidAliasLocalpart(lp)
}
