package config

import (
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Profiles limits who may look up users' profiles
// (GET /profile/{userId} and its parts).
type Profiles struct {
	// RequireToken answers profile look-ups only with an access token.
	RequireToken bool `yaml:"require_token"`
	// LimitToSharedRooms answers a user's profile only to users who share
	// a room with them or can find them in the user directory (they are
	// joined to a public room).
	LimitToSharedRooms bool `yaml:"limit_to_shared_rooms"`
}

// Push configures push notifications.
type Push struct {
	// GatewayAllowedRanges are internal address ranges (CIDR) push
	// gateways may be at; gateways at loopback, private, link-local and
	// other internal addresses are refused otherwise.
	GatewayAllowedRanges List `yaml:"gateway_allowed_ranges"`
}

// Email is the SMTP server Haven sends email through (password resets,
// email address checks, notifications). Empty SMTPHost turns email off.
type Email struct {
	SMTPHost string `yaml:"smtp_host"`
	SMTPPort int    `yaml:"smtp_port"`
	// SMTPTLS is starttls (upgrade a plain connection, port 587), tls
	// (TLS from the start, port 465) or none (only to a relay on this
	// host or a trusted network).
	SMTPTLS      string `yaml:"smtp_tls"`
	SMTPUsername string `yaml:"smtp_username"`
	SMTPPassword string `yaml:"smtp_password"`
	// From is the sender address, e.g. "Haven <chat@example.com>".
	From string `yaml:"from"`
	// NotificationDelay is how long a message stays unread before an email
	// pusher is sent a notification about it (a Go duration).
	NotificationDelay string `yaml:"notification_delay"`
	// ClientURL is the web client linked from notification emails (your
	// Element Web, say); empty links to matrix.to.
	ClientURL string `yaml:"client_url"`
	// TokensPerHour bounds the validation emails sent to one address per hour.
	TokensPerHour int `yaml:"tokens_per_hour"`
}

// Enabled tells whether email is configured.
func (e Email) Enabled() bool { return e.SMTPHost != "" }

// Delay is NotificationDelay parsed (10 minutes if unparsable; Check
// reports it).
func (e Email) Delay() time.Duration {
	d, err := time.ParseDuration(e.NotificationDelay)
	if err != nil || d <= 0 {
		return 10 * time.Minute
	}
	return d
}

func (e Email) check() Problems {
	var ps Problems
	add := func(key, value, why, fix string) {
		ps = append(ps, Problem{Key: key, Value: value, Why: why, Fix: fix})
	}
	if d, err := time.ParseDuration(e.NotificationDelay); err != nil || d < time.Second || d > 7*24*time.Hour {
		add("email.notification_delay", e.NotificationDelay, "must be a duration between 1s and 168h", "10m is the default")
	}
	if e.TokensPerHour < 1 || e.TokensPerHour > 1000 {
		add("email.tokens_per_hour", strconv.Itoa(e.TokensPerHour), "must be between 1 and 1000", "5 is the default")
	}
	if !e.Enabled() {
		if e.SMTPUsername != "" || e.SMTPPassword != "" {
			add("email.smtp_host", "", "is empty while an SMTP username or password is set", "name the SMTP server, for example smtp.example.com")
		}
		return ps
	}
	if strings.ContainsAny(e.SMTPHost, ":/ ") {
		add("email.smtp_host", e.SMTPHost, "is not a host name or address", "write the host alone, for example smtp.example.com, and the port in email.smtp_port")
	}
	if e.SMTPPort < 1 || e.SMTPPort > 65535 {
		add("email.smtp_port", strconv.Itoa(e.SMTPPort), "is not a port", "587 for starttls, 465 for tls, 25 for a relay")
	}
	switch e.SMTPTLS {
	case "starttls", "tls":
	case "none":
		if (e.SMTPUsername != "" || e.SMTPPassword != "") && !loopbackHost(e.SMTPHost) {
			add("email.smtp_tls", "none", "would send the SMTP password unencrypted to "+e.SMTPHost, "use starttls (port 587) or tls (port 465)")
		}
	default:
		add("email.smtp_tls", e.SMTPTLS, "must be starttls, tls or none", "starttls (port 587) suits most mail providers")
	}
	if (e.SMTPUsername == "") != (e.SMTPPassword == "") {
		add("email.smtp_username", e.SMTPUsername, "and email.smtp_password go together", "set both to log in to the SMTP server, or neither for a relay that needs no login")
	}
	if a, err := mail.ParseAddress(e.From); err != nil || !strings.Contains(a.Address, "@") {
		add("email.from", e.From, "is not an email address", `write an address people may reply to, for example "Haven <chat@example.com>"`)
	}
	return ps
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

func (p Push) check() Problems {
	var ps Problems
	for _, r := range p.GatewayAllowedRanges.Items() {
		if _, err := netip.ParsePrefix(r); err != nil {
			ps = append(ps, Problem{Key: "push.gateway_allowed_ranges", Value: r, Why: "is not an address range",
				Fix: "write ranges in CIDR notation, for example 10.1.2.0/24 (a single address: 10.1.2.3/32)"})
		}
	}
	return ps
}

// exposureWarnings are the closed-by-default warnings about the listener.
func (c Config) exposureWarnings() []string {
	var w []string
	if host, _, err := net.SplitHostPort(c.Listen); err == nil {
		if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
			w = append(w, fmt.Sprintf("listen is %s: the client API is served over plain HTTP on every interface, so passwords and access tokens cross the network unencrypted unless a TLS proxy is the only way in (listen on 127.0.0.1:PORT behind the proxy, or firewall the port)", c.Listen))
		}
	}
	if c.Email.Enabled() && c.Email.SMTPTLS == "none" && !loopbackHost(c.Email.SMTPHost) {
		w = append(w, "email.smtp_tls is none: password reset links cross the network to "+c.Email.SMTPHost+" unencrypted")
	}
	return w
}

// HasSecrets tells whether the configuration holds a secret (a password,
// shared secret or key) that others must not read.
func (c Config) HasSecrets() bool {
	if c.Registration.SharedSecret != "" || c.TURN.SharedSecret != "" || c.Email.SMTPPassword != "" || c.LDAP.BindPassword != "" ||
		c.Auth.TOTPEncryptionKey != "" || strings.Contains(c.Database, "password=") {
		return true
	}
	for _, p := range c.OIDC.Providers {
		if p.ClientSecret != "" {
			return true
		}
	}
	if u, err := url.Parse(c.Database); err == nil && u.User != nil {
		_, ok := u.User.Password()
		return ok
	}
	return false
}

// FileWarnings are the warnings about the configuration file itself: one
// holding secrets that users other than the owner may read.
func (c Config) FileWarnings(path string) []string {
	if path == "" || !c.HasSecrets() {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		return []string{fmt.Sprintf("%s holds secrets and is readable by other users (mode %04o): run `chmod 600 %s` (owned by the user Haven runs as)", path, mode, path)}
	}
	return nil
}

// closedChecks are the checks of the profiles, push and email sections.
func (c Config) closedChecks() Problems {
	ps := append(c.Push.check(), c.Email.check()...)
	if c.Email.Enabled() && c.PublicBaseURL == "" {
		ps = append(ps, Problem{Key: "public_baseurl", Why: "is empty, but the emails Haven sends (email.smtp_host is set) link to it",
			Fix: "set it to the URL people reach Haven at, for example https://matrix.example.com"})
	}
	return ps
}
