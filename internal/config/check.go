package config

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/internal/clientip"
	"github.com/haven-chat/haven/internal/ids"
)

// ValidServerName reports whether s is a Matrix server name: a DNS name,
// an IPv4 address or a bracketed IPv6 address, with an optional port.
func ValidServerName(s string) bool { return ids.ValidServerName(s) }

// Check returns every problem that can be found without touching the network.
// It reads the disk only for federation's certificate files, and only when
// federation is enabled.
func (c Config) Check() Problems {
	var ps Problems
	add := func(key, value, why, fix string) {
		ps = append(ps, Problem{Key: key, Value: value, Why: why, Fix: fix})
	}
	if !ValidServerName(c.ServerName) {
		add("server_name", c.ServerName, "is not a valid server name (a DNS name or IP address, optionally with :port; no scheme, path or spaces)",
			"set it to the domain in your users' IDs, for example `example.com` for @alice:example.com")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		add("listen", c.Listen, "is not host:port", "write an address and port, for example 127.0.0.1:8008 (behind a reverse proxy) or 0.0.0.0:8008")
	} else if _, port, _ := net.SplitHostPort(c.Listen); !validPort(port) {
		add("listen", c.Listen, "has an invalid port", "use a port between 1 and 65535, for example 8008")
	}
	if c.DataDir == "" {
		add("data_dir", "", "is empty", "set it to a folder Haven may write to, for example /var/lib/haven")
	}
	if c.PublicBaseURL != "" {
		if u, err := url.Parse(c.PublicBaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			add("public_baseurl", c.PublicBaseURL, "is not an http(s) URL", "write the URL clients use, for example https://matrix.example.com")
		}
	}
	if _, err := parseDatabase(c.Database); err != nil {
		fix := "leave it empty for SQLite in data_dir, or write sqlite:///path/file.db, or postgres://user:password@host:5432/dbname?sslmode=disable"
		if errors.Is(err, errUnencoded) {
			fix = "percent-encode the password in the URL: @ as %40, / as %2F, ? as %3F, # as %23, : as %3A and % as %25 " +
				"(python3 -c 'import urllib.parse,getpass; print(urllib.parse.quote(getpass.getpass(), safe=\"\"))' encodes one typed without echo)"
		}
		add("database", redactURL(c.Database), err.Error(), fix)
	}
	if c.DatabasePool < 1 || c.DatabasePool > 1000 {
		add("database_pool", strconv.Itoa(c.DatabasePool), "must be between 1 and 1000", "20 suits most servers; PostgreSQL's max_connections must be larger than the sum over all Haven processes")
	}
	if s := strings.ToUpper(c.SQLiteSynchronous); s != "FULL" && s != "NORMAL" {
		add("sqlite_synchronous", c.SQLiteSynchronous, "must be FULL or NORMAL", "FULL survives power loss; NORMAL survives process crashes and is faster")
	}
	if c.NATS.URL != "" {
		if u, err := url.Parse(c.NATS.URL); err != nil || (u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			add("nats.url", RedactNATS(c.NATS.URL), "is not a NATS URL", "write nats://host:4222, or leave it empty for the embedded NATS")
		}
	}
	if c.Registration.RequireToken && !c.Registration.Open {
		add("registration.require_token", "true", "needs registration.open: true (it limits open registration to holders of a token)",
			"set registration.open: true as well, or set require_token: false")
	}
	if c.PasswordHashCost < 4 || c.PasswordHashCost > 31 {
		add("password_hash_cost", strconv.Itoa(c.PasswordHashCost), "must be a bcrypt cost between 4 and 31", "use 12 (the default); lower it only for load tests")
	}
	warnAge, err1 := time.ParseDuration(c.Backup.WarnAge)
	critAge, err2 := time.ParseDuration(c.Backup.CriticalAge)
	if err1 != nil || warnAge <= 0 {
		add("backup.warn_age", c.Backup.WarnAge, "must be a positive duration", "for example 26h (a daily backup, with two hours to spare)")
	}
	if err2 != nil || critAge <= 0 || err1 == nil && critAge < warnAge {
		add("backup.critical_age", c.Backup.CriticalAge, "must be a duration no shorter than backup.warn_age", "for example 50h")
	}
	if c.Backup.MaxRate < 0 {
		add("backup.max_rate", strconv.Itoa(c.Backup.MaxRate), "must be 0 (unlimited) or a rate in MiB/s", "use 64 (the default), or 0 to back up as fast as the disk allows")
	}
	if d, err := time.ParseDuration(c.AccessTokenLifetime); err != nil || d < time.Second || d > 7*24*time.Hour {
		add("access_token_lifetime", c.AccessTokenLifetime, "must be a duration between 1s and 168h",
			"write a Go duration such as 5m (the default) or 1h; it applies only to clients that ask for refresh tokens")
	}
	if _, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(c.DefaultRoomVersion)); err != nil || !gomatrixserverlib.StableRoomVersion(gomatrixserverlib.RoomVersion(c.DefaultRoomVersion)) {
		add("default_room_version", c.DefaultRoomVersion, "is not a supported stable room version", "use one of 1 to 12; 11 is the default")
	}
	if c.MaxRequestBytes < 70000 || c.MaxRequestBytes > 1<<30 {
		add("max_request_bytes", strconv.FormatInt(c.MaxRequestBytes, 10), "must be between 70000 and 1073741824", "1048576 (1 MiB) is the default; events alone may be 65536 bytes")
	}
	if f := strings.ToLower(c.Logging.Format); f != "text" && f != "json" {
		add("logging.format", c.Logging.Format, "must be text or json", "use json when a log collector reads the logs, text for people")
	}
	switch strings.ToLower(c.Logging.Level) {
	case "trace", "debug", "info", "warn", "warning", "error":
	default:
		add("logging.level", c.Logging.Level, "is not a log level", "use one of debug, info, warn, error")
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			add("metrics.listen", c.Metrics.Listen, "is not host:port", "for example 127.0.0.1:9090; leave empty to turn metrics off")
		} else if c.Metrics.Listen == c.Listen {
			add("metrics.listen", c.Metrics.Listen, "is the same address as listen", "give metrics their own port, for example 127.0.0.1:9090, so they are not public")
		}
	}
	if c.Audit.RetentionDays < 1 || c.Audit.RetentionDays > 36500 {
		add("audit.retention_days", strconv.Itoa(c.Audit.RetentionDays), "must be between 1 and 36500",
			"365 (the default) keeps a year of logins and admin actions; check what your policy requires")
	}
	ps = append(ps, c.TURN.check()...)
	ps = append(ps, c.Media.check()...)
	ps = append(ps, c.Federation.check(c)...)
	for _, it := range c.TrustedProxies.Items() {
		if _, err := clientip.ParseItem(it); err != nil {
			add("trusted_proxies", it, "is not an IP address or an address range",
				"list the addresses of your reverse proxies as they connect to Haven, for example 127.0.0.1 (nginx on this machine) or 10.0.1.0/24; leave the list empty when clients connect directly")
		}
	}
	if c.PasswordPolicy.MinLength < 1 || c.PasswordPolicy.MinLength > 128 {
		add("password_policy.min_length", strconv.Itoa(c.PasswordPolicy.MinLength), "must be between 1 and 128", "10 is the default; longer passphrases are easier to remember than short complex passwords")
	}
	ps = append(ps, c.Auth.check()...)
	ps = append(ps, c.LDAP.check()...)
	ps = append(ps, c.closedChecks()...)
	ps = append(ps, c.OIDC.check(c.PublicBaseURL)...)
	if c.RateLimits.Enabled {
		if c.RateLimits.LoginPerMinute < 1 {
			add("rate_limits.login_per_minute", strconv.Itoa(c.RateLimits.LoginPerMinute), "must be at least 1", "10 is the default; set rate_limits.enabled: false to turn limits off")
		}
		if c.RateLimits.RegisterPerMinute < 1 {
			add("rate_limits.register_per_minute", strconv.Itoa(c.RateLimits.RegisterPerMinute), "must be at least 1", "10 is the default")
		}
		if c.RateLimits.MessagesPerSecond <= 0 || c.RateLimits.MessageBurst < 1 {
			add("rate_limits.messages_per_second", fmt.Sprint(c.RateLimits.MessagesPerSecond), "messages_per_second and message_burst must be positive", "10 per second with a burst of 50 is the default")
		}
	}
	return ps
}

// check finds the problems of the media section.
func (m Media) check() Problems {
	var ps Problems
	add := func(key, value, why, fix string) {
		ps = append(ps, Problem{Key: key, Value: value, Why: why, Fix: fix})
	}
	if m.MaxUploadBytes < 1024 || m.MaxUploadBytes > 1<<40 {
		add("media.max_upload_bytes", strconv.FormatInt(m.MaxUploadBytes, 10), "must be between 1024 and 1099511627776",
			"52428800 (50 MiB) is the default; a reverse proxy in front must allow bodies this large too (nginx: client_max_body_size)")
	}
	if m.QuotaBytesPerUser < 0 {
		add("media.quota_bytes_per_user", strconv.FormatInt(m.QuotaBytesPerUser, 10), "must not be negative", "0 (the default) means no quota; otherwise give bytes, e.g. 1073741824 for 1 GiB")
	} else if m.QuotaBytesPerUser > 0 && m.QuotaBytesPerUser < m.MaxUploadBytes {
		add("media.quota_bytes_per_user", strconv.FormatInt(m.QuotaBytesPerUser, 10), "is smaller than media.max_upload_bytes, so the largest allowed upload could never fit",
			"raise the quota or lower media.max_upload_bytes")
	}
	if m.MaxThumbnailPixels < 1_000_000 || m.MaxThumbnailPixels > 500_000_000 {
		add("media.max_thumbnail_pixels", strconv.FormatInt(m.MaxThumbnailPixels, 10), "must be between 1000000 and 500000000",
			"50000000 (the default) thumbnails 50-megapixel photos; decoding takes up to 4 bytes a pixel of memory per worker")
	}
	if m.ThumbnailWorkers < 1 || m.ThumbnailWorkers > 64 {
		add("media.thumbnail_workers", strconv.Itoa(m.ThumbnailWorkers), "must be between 1 and 64", "2 is the default; about the number of CPU cores to spare for images")
	}
	if m.MaxPendingUploads < 1 || m.MaxPendingUploads > 10000 {
		add("media.max_pending_uploads", strconv.Itoa(m.MaxPendingUploads), "must be between 1 and 10000", "20 is the default")
	}
	for key, l := range map[string]List{"media.url_preview_denied_ranges": m.URLPreviewDeniedRanges, "media.url_preview_allowed_ranges": m.URLPreviewAllowedRanges} {
		for _, r := range l.Items() {
			if _, err := netip.ParsePrefix(r); err != nil {
				add(key, r, "is not an address range", "write ranges in CIDR notation, for example 10.1.2.0/24 or fd00:1234::/32 (a single address: 10.1.2.3/32)")
			}
		}
	}
	return ps
}

// check finds the problems of the turn section.
func (t TURN) check() Problems {
	var ps Problems
	for _, u := range t.URIs.Items() {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") && !strings.HasPrefix(u, "stun:") {
			ps = append(ps, Problem{Key: "turn.uris", Value: u, Why: "is not a turn:, turns: or stun: URI",
				Fix: "write the URIs clients use, for example turn:turn.example.com:3478?transport=udp and turns:turn.example.com:5349?transport=tcp"})
		}
	}
	if t.SharedSecret != "" && len(t.SharedSecret) < 16 {
		ps = append(ps, Problem{Key: "turn.shared_secret", Value: "xxxxx", Why: "is shorter than 16 characters, so it can be guessed",
			Fix: "use the TURN server's static-auth-secret; make it long and random, e.g. `openssl rand -hex 32`"})
	}
	if t.SharedSecret != "" && len(t.URIs.Items()) == 0 {
		ps = append(ps, Problem{Key: "turn.shared_secret", Value: "xxxxx", Why: "is set but turn.uris is empty, so no client would get a TURN server",
			Fix: "list the TURN server's URIs in turn.uris, or remove turn.shared_secret"})
	}
	if d, err := time.ParseDuration(t.UserLifetime); err != nil || d < time.Minute || d > 7*24*time.Hour {
		ps = append(ps, Problem{Key: "turn.user_lifetime", Value: t.UserLifetime, Why: "must be a duration between 1m and 168h",
			Fix: "write a Go duration such as 1h (the default) or 30m"})
	}
	return ps
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

// Warnings are settings that work but deserve a word at start.
func (c Config) Warnings() []string {
	var w []string
	if c.PasswordHashCost < 10 {
		w = append(w, fmt.Sprintf("password_hash_cost is %d: passwords are hashed quickly, which suits load tests but not production (use 12)", c.PasswordHashCost))
	}
	if !c.RateLimits.Enabled {
		w = append(w, "rate_limits.enabled is false: login and registration are not protected against brute force")
	}
	if d, err := time.ParseDuration(c.AccessTokenLifetime); err == nil && d >= time.Second && d < time.Minute {
		w = append(w, fmt.Sprintf("access_token_lifetime is %s: clients with refresh tokens refresh their access token that often (use 5m)", d))
	}
	if c.Registration.Open && !c.Registration.RequireToken {
		w = append(w, "registration.open is true: anyone who can reach this server can create an account")
	}
	if c.AdminAPI.LoginAsUser {
		w = append(w, "admin_api.login_as_user is true: server admins can get access tokens of any user")
	}
	if n := len(c.Registration.SharedSecret); n > 0 && n < 16 {
		// Test harnesses use short secrets; production should not.
		w = append(w, fmt.Sprintf("registration.shared_secret is %d characters long: a short secret can be guessed, and whoever knows it can create admin accounts (use `openssl rand -hex 32`)", n))
	}
	w = append(w, c.Federation.warnings(c)...)
	w = append(w, c.Auth.warnings()...)
	w = append(w, c.oauthWarnings()...)
	w = append(w, c.LDAP.warnings()...)
	w = append(w, c.exposureWarnings()...)
	w = append(w, c.OIDC.warnings()...)
	return w
}

type dbKind struct {
	postgres bool
	url      string
	path     string
}

func parseDatabase(s string) (dbKind, error) {
	switch {
	case s == "" || s == "sqlite":
		return dbKind{}, nil
	case strings.HasPrefix(s, "sqlite://"):
		p := strings.TrimPrefix(s, "sqlite://")
		if p == "" || p == "/" {
			return dbKind{}, errors.New("the sqlite:// URL names no file")
		}
		return dbKind{path: p}, nil
	case strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://"):
		if unencodedUserinfo(s) {
			return dbKind{}, errUnencoded
		}
		u, err := url.Parse(s)
		if err != nil {
			return dbKind{}, errors.New("is not a valid URL")
		}
		if strings.Trim(u.Path, "/") == "" {
			return dbKind{}, errors.New("names no database (the part after the last /)")
		}
		if _, err := pgconn.ParseConfig(s); err != nil {
			return dbKind{}, errors.New("is not a valid PostgreSQL URL")
		}
		return dbKind{postgres: true, url: s}, nil
	}
	return dbKind{}, errors.New("is not a database this server knows")
}

// errUnencoded is the database URL problem of a password holding URL
// delimiters as they are.
var errUnencoded = errors.New("the password (or user name) holds @, /, ? or # as it is, so the URL cannot be read: the server would take part of the password for the host or the database name")

// unencodedUserinfo tells whether a URL's user name or password holds a
// character that ends that part (@ / ? #) without percent-encoding.
func unencodedUserinfo(raw string) bool {
	i := strings.Index(raw, "://")
	if i < 0 {
		return false
	}
	rest := raw[i+3:]
	// The user information ends at the last @, unless that @ is in a
	// query parameter (a = before it).
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return false
	}
	userinfo := rest[:at]
	return strings.ContainsAny(userinfo, "@/?#") && !strings.Contains(userinfo, "=")
}

func redactURL(raw string) string {
	if unencodedUserinfo(raw) {
		return scrubUserinfo(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return scrubUserinfo(raw)
	}
	if u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// RedactNATS masks the credentials of a NATS URL: the password of
// user:password@, or the whole token of token@.
func RedactNATS(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return scrubUserinfo(raw)
	}
	if u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	} else {
		u.User = url.User("xxxxx")
	}
	return u.String()
}

// scrubUserinfo masks what may be a password in a URL that does not parse:
// everything after the first colon of the part between :// and the last @.
func scrubUserinfo(raw string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return raw
	}
	rest := raw[i+3:]
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return raw
	}
	user, _, _ := strings.Cut(rest[:at], ":")
	return raw[:i+3] + user + ":xxxxx" + rest[at:]
}

// CheckLive tries what the static check cannot: the data folder, the database,
// NATS and the listening ports. It returns every problem at once. When
// serving is true the ports are expected to be free.
func (c Config) CheckLive(ctx context.Context, portsMustBeFree bool) Problems {
	var ps Problems
	ps = append(ps, checkDataDir(c.DataDir)...)
	ps = append(ps, c.checkWritable()...)
	if db, err := parseDatabase(c.Database); err == nil && db.postgres {
		if p := checkPostgres(ctx, db.url); p != nil {
			ps = append(ps, *p)
		}
	} else if err == nil && db.path != "" {
		ps = append(ps, checkDataDirAt("database", c.Database, filepath.Dir(db.path))...)
	}
	if c.NATS.URL != "" {
		if p := checkNATS(c.NATS.URL); p != nil {
			ps = append(ps, *p)
		}
	}
	if portsMustBeFree {
		for _, l := range []struct{ key, addr string }{{"listen", c.Listen}, {"metrics.listen", c.Metrics.Listen}} {
			if l.addr == "" {
				continue
			}
			if p := checkPort(l.key, l.addr); p != nil {
				ps = append(ps, *p)
			}
		}
	}
	return ps
}

func checkDataDir(dir string) Problems {
	if dir == "" {
		return nil
	}
	return checkDataDirAt("data_dir", dir, dir)
}

func checkDataDirAt(key, value, dir string) Problems {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Problems{{Key: key, Value: value, Why: "the folder " + dir + " cannot be created: " + errString(err),
			Fix: "create it and give the user running Haven write access: mkdir -p " + dir + " && chown $(whoami) " + dir}}
	}
	f, err := os.CreateTemp(dir, ".haven-write-test-*")
	if err != nil {
		return Problems{{Key: key, Value: value, Why: "the folder " + dir + " is not writable: " + errString(err),
			Fix: "give the user running Haven write access: chown -R $(whoami) " + dir}}
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	return nil
}

func checkPort(key, addr string) *Problem {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		why := "cannot be listened on: " + err.Error()
		fix := "pick another address or port"
		if errors.Is(err, syscall.EADDRINUSE) {
			why = "the port is already in use by another program"
			fix = "stop the other program (see `ss -ltnp`) or choose another port"
		} else if errors.Is(err, syscall.EACCES) {
			why = "permission denied (ports below 1024 need privileges)"
			fix = "use a port above 1024, such as 8008, and put a reverse proxy on 443"
		} else if errors.Is(err, syscall.EADDRNOTAVAIL) {
			why = "no network interface of this machine has that address"
			fix = "use 127.0.0.1, 0.0.0.0 or one of this machine's addresses"
		}
		return &Problem{Key: key, Value: addr, Why: why, Fix: fix}
	}
	l.Close()
	return nil
}

func checkNATS(raw string) *Problem {
	u, err := url.Parse(raw)
	if err != nil {
		return nil // reported by Check
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "4222")
	}
	conn, err := net.DialTimeout("tcp", host, 3*time.Second)
	if err != nil {
		return &Problem{Key: "nats.url", Value: RedactNATS(raw), Why: "does not answer: " + dialReason(err),
			Fix: "is the NATS server running on " + u.Hostname() + "? Its default port is 4222. Or leave nats.url empty for the embedded NATS"}
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 5)
	if _, err := conn.Read(buf); err != nil || string(buf[:4]) != "INFO" {
		return &Problem{Key: "nats.url", Value: RedactNATS(raw), Why: "something answers there, but it is not NATS", Fix: "check the host and port of your NATS server (default 4222)"}
	}
	return nil
}

func dialReason(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "the host name does not resolve"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "no answer (timed out; a firewall may drop the packets)"
	}
	return err.Error()
}

func checkPostgres(ctx context.Context, raw string) *Problem {
	shown := redactURL(raw)
	cfg, err := pgconn.ParseConfig(raw)
	if err != nil {
		return &Problem{Key: "database", Value: shown, Why: "is not a valid PostgreSQL URL", Fix: "write postgres://user:password@host:5432/dbname?sslmode=disable"}
	}
	cfg.ConnectTimeout = 5 * time.Second
	cctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, cfg)
	if err == nil {
		conn.Close(ctx)
		return nil
	}
	p := &Problem{Key: "database", Value: shown}
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "28P01":
		p.Why = "password authentication failed for user " + cfg.User
		p.Fix = "check the password in the URL (special characters must be percent-encoded), or set it with ALTER USER " + cfg.User + " PASSWORD '...'"
	case errors.As(err, &pgErr) && pgErr.Code == "28000":
		p.Why = "the server refuses this user or address: " + pgErr.Message
		p.Fix = "add a line for this host and user to pg_hba.conf, or check the user name"
	case errors.As(err, &pgErr) && pgErr.Code == "3D000":
		p.Why = "the database " + cfg.Database + " does not exist"
		p.Fix = "create it: createdb -O " + cfg.User + " -E UTF8 --locale=C -T template0 " + cfg.Database +
			" (or CREATE DATABASE " + cfg.Database + " OWNER " + cfg.User + " ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;)"
	case errors.Is(err, syscall.ECONNREFUSED):
		p.Why = "connection refused"
		fix := "is PostgreSQL running on " + cfg.Host + "?"
		if cfg.Port != 5432 {
			fix += fmt.Sprintf(" Its default port is 5432, this URL says %d.", cfg.Port)
		} else {
			fix += " Check listen_addresses in postgresql.conf."
		}
		p.Fix = fix
	default:
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			p.Why = "the host " + cfg.Host + " does not resolve"
			p.Fix = "check the host name in the URL"
		} else if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			p.Why = "no answer from " + cfg.Host + " (timed out)"
			p.Fix = "is the host up and is port " + strconv.Itoa(int(cfg.Port)) + " open in its firewall?"
		} else if errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
			p.Why = "the host " + cfg.Host + " is unreachable"
			p.Fix = "check the host name or address and the network between this machine and the database"
		} else {
			msg := err.Error()
			if cfg.Password != "" {
				msg = strings.ReplaceAll(msg, cfg.Password, "xxxxx")
			}
			p.Why = "cannot connect: " + msg
			p.Fix = "check host, port, user, password and database name in the URL"
		}
	}
	return p
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
