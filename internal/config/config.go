// Package config is Haven's typed configuration: defaults, a YAML file,
// HAVEN_* environment overrides, and Check, which lists every problem at once
// with the key, the value, what is wrong and the fix.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration. Each field's yaml tag is its key; the
// environment variable is HAVEN_ plus the upper snake case of the key path.
type Config struct {
	ServerName string `yaml:"server_name"`
	Listen     string `yaml:"listen"`
	DataDir    string `yaml:"data_dir"`
	// PublicBaseURL is the URL clients reach this server at (for /.well-known).
	PublicBaseURL string `yaml:"public_baseurl"`
	Database      string `yaml:"database"`
	DatabasePool  int    `yaml:"database_pool"`
	// SQLiteSynchronous trades durability for speed on SQLite: FULL or NORMAL.
	SQLiteSynchronous string       `yaml:"sqlite_synchronous"`
	Registration      Registration `yaml:"registration"`
	AdminAPI          AdminAPI     `yaml:"admin_api"`
	Auth              Auth         `yaml:"auth"`
	// LDAP checks passwords against the company directory.
	LDAP       LDAP       `yaml:"ldap"`
	NATS       NATS       `yaml:"nats"`
	RateLimits RateLimits `yaml:"rate_limits"`
	// TrustedProxies are the reverse proxies (addresses or CIDR ranges)
	// whose X-Forwarded-For header names the client; from anyone else
	// the header is ignored.
	TrustedProxies   List           `yaml:"trusted_proxies"`
	PasswordPolicy   PasswordPolicy `yaml:"password_policy"`
	PasswordHashCost int            `yaml:"password_hash_cost"`
	// AccessTokenLifetime is how long an access token lives when the
	// client asked for a refresh token at login or registration, as a Go
	// duration; other clients keep tokens that never expire.
	AccessTokenLifetime string   `yaml:"access_token_lifetime"`
	DefaultRoomVersion  string   `yaml:"default_room_version"`
	MaxRequestBytes     int64    `yaml:"max_request_bytes"`
	Logging             Logging  `yaml:"logging"`
	Metrics             Metrics  `yaml:"metrics"`
	Audit               Audit    `yaml:"audit"`
	Presence            Presence `yaml:"presence"`
	TURN                TURN     `yaml:"turn"`
	Media               Media    `yaml:"media"`
	Backup              Backup   `yaml:"backup"`
	// AppServices are the registration files of the application services
	// (bridges and bots); appservice.Load reads and checks them.
	AppServices List `yaml:"app_services"`
	// Federation is the Server-Server API between a company's sites.
	Federation Federation `yaml:"federation"`
	Profiles   Profiles   `yaml:"profiles"`
	Push       Push       `yaml:"push"`
	Email      Email      `yaml:"email"`
	// OIDC is sign-in through the company's identity providers.
	OIDC OIDC `yaml:"oidc"`
}

// Federation is the Server-Server API (off by default). The key names are
// fixed: outside tools and the deployment docs rely on them.
type Federation struct {
	Enabled bool `yaml:"enabled"`
	// Listen is the HTTPS address of /_matrix/federation and /_matrix/key,
	// e.g. 0.0.0.0:8448.
	Listen string `yaml:"listen"`
	// TLSCert and TLSKey are PEM files (the certificate with its chain),
	// reloaded on SIGHUP.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// CAFile holds the CAs trusted for peers' certificates; empty means the
	// system roots.
	CAFile string `yaml:"ca_file"`
	// MutualTLS presents our certificate to peers and requires one from them.
	MutualTLS bool `yaml:"mutual_tls"`
	// AllowedServers are the only servers federated with; empty means any.
	AllowedServers List `yaml:"allowed_servers"`
	// Servers are static addresses of partner servers (name: host:port),
	// used instead of discovery.
	Servers Map `yaml:"servers"`
	// AllowPrivateAddresses lets outbound requests reach loopback and
	// private addresses for servers not named in AllowedServers or Servers.
	AllowPrivateAddresses bool `yaml:"allow_private_addresses"`
	// InsecureSkipTLSVerify accepts any certificate from peers: only for
	// test suites whose servers use throwaway certificates.
	InsecureSkipTLSVerify bool `yaml:"insecure_skip_tls_verify"`
}

// Map is a mapping of plain strings to plain strings (federation.servers),
// stored as "k=v,k=v" so that it has an environment form like List and
// keeps Config comparable. In a file it is written as a YAML mapping (or
// as the "k=v,k=v" string); in the environment as the string.
type Map string

var mapType = reflect.TypeOf(Map(""))

// mapItem is one "k=v" item of a Map as written.
type mapItem struct {
	raw, key, value string
	ok              bool
}

// items splits the map as written, malformed items included (Check
// reports them).
func (m Map) items() []mapItem {
	var out []mapItem
	for _, kv := range strings.Split(string(m), ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		out = append(out, mapItem{raw: strings.TrimSpace(kv), key: k, value: v, ok: ok && k != "" && v != "" && !strings.Contains(v, "=")})
	}
	return out
}

// normalizeMap trims the spaces around the items, keys and values of a
// well-formed map, so that it marshals and loads back to the same string;
// a malformed one is kept as written for Check to report.
func normalizeMap(s string) string {
	items := Map(s).items()
	parts := make([]string, 0, len(items))
	for _, it := range items {
		if !it.ok {
			return s
		}
		parts = append(parts, it.key+"="+it.value)
	}
	return strings.Join(parts, ",")
}

// MarshalYAML writes a well-formed map as a YAML mapping in its order, and
// anything else as the string it is.
func (m Map) MarshalYAML() (any, error) {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for _, it := range m.items() {
		if !it.ok {
			return string(m), nil
		}
		n.Content = append(n.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: it.key},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: it.value})
	}
	if len(n.Content) == 0 {
		n.Style = yaml.FlowStyle
	}
	return n, nil
}

// Entries returns the map's entries.
func (m Map) Entries() map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(string(m), ",") {
		k, v, ok := strings.Cut(kv, "=")
		if k, v = strings.TrimSpace(k), strings.TrimSpace(v); ok && k != "" {
			out[k] = v
		}
	}
	return out
}

type Registration struct {
	Open         bool   `yaml:"open"`
	SharedSecret string `yaml:"shared_secret"`
	// Guests allows guest accounts (POST /register?kind=guest).
	Guests bool `yaml:"guests"`
	// RequireToken makes open registration need a registration token (the
	// m.login.registration_token stage; tokens come from the admin API).
	RequireToken bool `yaml:"require_token"`
}

// AdminAPI configures the admin API under /_synapse/admin/.
type AdminAPI struct {
	// LoginAsUser enables POST /_synapse/admin/v1/users/{userId}/login,
	// which gives an admin an access token of another user.
	LoginAsUser bool `yaml:"login_as_user"`
}

type NATS struct {
	URL string `yaml:"url"`
}

type RateLimits struct {
	Enabled bool `yaml:"enabled"`
	// LoginPerMinute and RegisterPerMinute are per client address.
	LoginPerMinute    int `yaml:"login_per_minute"`
	RegisterPerMinute int `yaml:"register_per_minute"`
	// MessagesPerSecond is per user, with a burst of MessageBurst.
	MessagesPerSecond float64 `yaml:"messages_per_second"`
	MessageBurst      int     `yaml:"message_burst"`
}

// PasswordPolicy applies to passwords being set: registration, password
// changes, admin resets and create-user.
type PasswordPolicy struct {
	// MinLength is the fewest characters a new password may have.
	MinLength int `yaml:"min_length"`
	// RefuseCommon refuses passwords from the built-in list of common
	// passwords and their variants.
	RefuseCommon bool `yaml:"refuse_common"`
}

type Logging struct {
	Format string `yaml:"format"`
	Level  string `yaml:"level"`
}

type Metrics struct {
	// Listen is the address of the /metrics listener; empty turns it off.
	Listen string `yaml:"listen"`
}

// Audit is the audit log (internal/audit).
type Audit struct {
	// RetentionDays is how long entries are kept; older ones are deleted
	// once a day.
	RetentionDays int `yaml:"retention_days"`
}

type Presence struct {
	Enabled bool `yaml:"enabled"`
}

// Media is the media repository (uploads, downloads, thumbnails).
type Media struct {
	// MaxUploadBytes is the largest upload accepted.
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// QuotaBytesPerUser caps the total size of a user's uploads; 0 is unlimited.
	QuotaBytesPerUser int64 `yaml:"quota_bytes_per_user"`
	// MaxThumbnailPixels is the largest image (width × height; frames ×
	// width × height for an animated GIF) that is thumbnailed.
	MaxThumbnailPixels int64 `yaml:"max_thumbnail_pixels"`
	// ThumbnailWorkers is how many thumbnails are made at once.
	ThumbnailWorkers int `yaml:"thumbnail_workers"`
	// MaxPendingUploads is how many IDs from /media/v1/create a user may
	// hold before uploading to them.
	MaxPendingUploads int `yaml:"max_pending_uploads"`
	// LegacyUnauthenticated serves the deprecated unauthenticated
	// /_matrix/media/v3/download and /thumbnail endpoints.
	LegacyUnauthenticated bool `yaml:"legacy_unauthenticated"`
	// URLPreviews serves /preview_url: the server fetches the pages users
	// preview. Off, the endpoint answers 404 M_UNRECOGNIZED.
	URLPreviews bool `yaml:"url_previews"`
	// URLPreviewDeniedRanges are address ranges (CIDR) previews may not
	// fetch from, besides the built-in private, loopback, link-local and
	// other special ranges.
	URLPreviewDeniedRanges List `yaml:"url_preview_denied_ranges"`
	// URLPreviewAllowedRanges are exceptions to the denied ranges (an
	// intranet wiki, say).
	URLPreviewAllowedRanges List `yaml:"url_preview_allowed_ranges"`
}

// TURN is the TURN server handed to VoIP clients by /voip/turnServer.
type TURN struct {
	// URIs are the TURN server's URIs (turn:host:port?transport=udp, turns:...).
	URIs List `yaml:"uris"`
	// SharedSecret is the TURN server's static-auth-secret; credentials are
	// derived from it per user, valid for UserLifetime.
	SharedSecret string `yaml:"shared_secret"`
	// UserLifetime is how long handed-out credentials stay valid, as a Go
	// duration such as 1h or 30m.
	UserLifetime string `yaml:"user_lifetime"`
}

// TokenLifetime is AccessTokenLifetime parsed; an unparseable value
// (which Check reports) counts as five minutes.
func (c Config) TokenLifetime() time.Duration {
	d, err := time.ParseDuration(c.AccessTokenLifetime)
	if err != nil || d <= 0 {
		return 5 * time.Minute
	}
	return d
}

// Lifetime is UserLifetime parsed; an unparseable value (which Check
// reports) counts as one hour.
func (t TURN) Lifetime() time.Duration {
	d, err := time.ParseDuration(t.UserLifetime)
	if err != nil || d <= 0 {
		return time.Hour
	}
	return d
}

// List is a list of strings that keeps Config comparable: the items are
// stored joined by commas. In a file it is written as a YAML list; in the
// environment as comma-separated items.
type List string

// Items returns the list's items, without empty ones.
func (l List) Items() []string {
	var out []string
	for _, s := range strings.Split(string(l), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

var listType = reflect.TypeOf(List(""))

// Default returns the configuration used when nothing is set.
// Backup is where `haven backup` and `haven migrate` put backups, and
// how old the newest may get before `haven health` warns.
type Backup struct {
	// Dir is the folder of backups; empty means data_dir/backups, and
	// `haven health` then does not check the backup age.
	Dir string `yaml:"dir"`
	// WarnAge and CriticalAge are the newest backup's ages (Go durations)
	// at which `haven health` reports WARNING and CRITICAL.
	WarnAge     string `yaml:"warn_age"`
	CriticalAge string `yaml:"critical_age"`
	// MaxRate bounds how fast `haven backup` reads the database (SQLite)
	// and the media files, in MiB/s, so the server serving beside it keeps
	// its disk; 0 is unlimited. --max-rate overrides it.
	MaxRate int `yaml:"max_rate"`
}

// BackupDir is the folder of backups (backup.dir, or data_dir/backups).
func (c Config) BackupDir() string {
	if c.Backup.Dir != "" {
		return c.Backup.Dir
	}
	return filepath.Join(c.DataDir, "backups")
}

func Default() Config {
	return Config{
		ServerName:        "localhost",
		Listen:            "127.0.0.1:8008",
		DataDir:           "./haven-data",
		DatabasePool:      20,
		SQLiteSynchronous: "FULL",
		RateLimits: RateLimits{
			Enabled:           true,
			LoginPerMinute:    10,
			RegisterPerMinute: 10,
			MessagesPerSecond: 10,
			MessageBurst:      50,
		},
		PasswordPolicy: PasswordPolicy{MinLength: 10, RefuseCommon: true},
		Auth:           Auth{TOTP: TOTPOff, TOTPAdmins: true, OAuth: true},
		LDAP: LDAP{UserFilter: DefaultLDAPUserFilter, LocalpartAttribute: "uid", DisplayNameAttribute: "cn",
			EmailAttribute: "mail", CreateAccounts: true, Timeout: DefaultLDAPTimeout},
		PasswordHashCost:    12,
		AccessTokenLifetime: "5m",
		DefaultRoomVersion:  "11",
		MaxRequestBytes:     1 << 20,
		Logging:             Logging{Format: "text", Level: "info"},
		Audit:               Audit{RetentionDays: 365},
		Presence:            Presence{Enabled: true},
		TURN:                TURN{UserLifetime: "1h"},
		Media: Media{MaxUploadBytes: 50 << 20, MaxThumbnailPixels: 50_000_000, ThumbnailWorkers: 2,
			MaxPendingUploads: 20},
		Backup:   Backup{WarnAge: "26h", CriticalAge: "50h", MaxRate: 64},
		Profiles: Profiles{RequireToken: true},
		Email:    Email{SMTPPort: 587, SMTPTLS: "starttls", NotificationDelay: "10m", TokensPerHour: 5},
	}
}

// Problem is one thing wrong with the configuration.
type Problem struct {
	Key   string
	Value string
	Why   string
	Fix   string
}

func (p Problem) String() string {
	s := p.Key
	if p.Value != "" {
		s += ": " + p.Value
	}
	s += " — " + p.Why
	if p.Fix != "" {
		s += "\n  Fix: " + p.Fix
	}
	return s
}

// Problems is a list of problems; as an error it prints all of them.
type Problems []Problem

func (ps Problems) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d configuration problem(s):\n", len(ps))
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Load reads defaults, then the file (if path is not empty), then the
// environment. Unknown keys and wrong types are reported as Problems, together
// with everything Check finds.
func Load(path string, environ []string) (Config, Problems) {
	cfg := Default()
	var probs Problems
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, Problems{{Key: "--config", Value: path, Why: "cannot be read: " + errString(err), Fix: "give the path of an existing YAML file, or run `haven generate-config > " + path + "` to create one"}}
		}
		probs = append(probs, decodeYAML(data, &cfg)...)
	}
	probs = append(probs, applyEnv(&cfg, environ)...)
	probs = append(probs, cfg.Check()...)
	return cfg, probs
}

func errString(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// decodeYAML decodes strictly, reporting every unknown key and wrong type.
func decodeYAML(data []byte, cfg *Config) Problems {
	var probs Problems
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return Problems{{Key: "(file)", Why: "is not valid YAML: " + err.Error(), Fix: "correct the YAML syntax at the line named"}}
	}
	if len(root.Content) == 0 {
		return nil
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return Problems{{Key: "(file)", Why: "the top level must be a mapping of keys to values", Fix: "start from `haven generate-config`"}}
	}
	walkNode(doc, reflect.ValueOf(cfg).Elem(), "", &probs)
	return probs
}

func walkNode(n *yaml.Node, v reflect.Value, prefix string, probs *Problems) {
	fields := fieldsByKey(v.Type())
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolveAlias(n.Content[i]), resolveAlias(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			*probs = append(*probs, Problem{Key: fmt.Sprintf("%s(line %d)", prefix, k.Line), Why: "a key must be a plain name, not a list or a mapping",
				Fix: "write each key as a plain word followed by a colon, as `haven generate-config` shows"})
			continue
		}
		key := prefix + displayKey(k.Value)
		idx, ok := fields[k.Value]
		if !ok {
			fix := "remove it"
			if s := suggest(k.Value, fields); s != "" {
				fix = fmt.Sprintf("did you mean %q?", prefix+s)
			}
			*probs = append(*probs, Problem{Key: key, Why: fmt.Sprintf("unknown key (line %d)", k.Line), Fix: fix})
			continue
		}
		f := v.Field(idx)
		if f.Kind() == reflect.Struct {
			if val.Kind == yaml.ScalarNode && val.Tag == "!!null" {
				// "metrics:" with every sub-key commented out: keep the defaults.
				continue
			}
			if val.Kind != yaml.MappingNode {
				*probs = append(*probs, Problem{Key: key, Value: val.Value, Why: fmt.Sprintf("must be a mapping (line %d)", val.Line), Fix: "indent its sub-keys below it, as `haven generate-config` shows"})
				continue
			}
			walkNode(val, f, key+".", probs)
			continue
		}
		if f.Type() == listType && val.Kind == yaml.SequenceNode {
			setList(f, val, key, probs)
			continue
		}
		if f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct {
			setStructList(f, val, key, probs)
			continue
		}
		if f.Type() == mapType && val.Kind == yaml.MappingNode {
			setMap(f, val, key, probs)
			continue
		}
		if f.Type() == mapType && val.Kind != yaml.ScalarNode {
			*probs = append(*probs, Problem{Key: key, Why: fmt.Sprintf("must be a mapping of names to values (line %d)", val.Line),
				Fix: "write one `name: value` per line below it, for example `b.example.com: 10.0.0.6:8448`"})
			continue
		}
		if val.Kind != yaml.ScalarNode {
			*probs = append(*probs, Problem{Key: key, Why: fmt.Sprintf("must be a single %s value (line %d)", kindName(f.Kind()), val.Line), Fix: "write one value after the colon"})
			continue
		}
		if val.Tag == "!!null" {
			continue
		}
		if err := setScalar(f, val.Value); err != nil {
			*probs = append(*probs, Problem{Key: key, Value: maskIfSecret(key, val.Value), Why: fmt.Sprintf("must be %s (line %d)", kindName(f.Kind()), val.Line), Fix: "write " + exampleOf(f.Kind())})
		} else if f.Type() == mapType {
			f.SetString(normalizeMap(f.String()))
		}
	}
}

// setStructList decodes a YAML list of mappings (such as oidc.providers)
// into a slice of structs, each item as strictly as the top level.
func setStructList(f reflect.Value, val *yaml.Node, key string, probs *Problems) {
	if val.Kind == yaml.ScalarNode && val.Tag == "!!null" {
		return
	}
	if val.Kind != yaml.SequenceNode {
		*probs = append(*probs, Problem{Key: key, Why: fmt.Sprintf("must be a list (line %d)", val.Line),
			Fix: "write one item per entry, each starting with `- `, as docs/configuration.md shows"})
		return
	}
	if len(val.Content) == 0 {
		f.Set(reflect.Zero(f.Type()))
		return
	}
	out := reflect.MakeSlice(f.Type(), 0, len(val.Content))
	for i, item := range val.Content {
		item = resolveAlias(item)
		itemKey := fmt.Sprintf("%s[%d]", key, i)
		if item.Kind != yaml.MappingNode {
			*probs = append(*probs, Problem{Key: itemKey, Why: fmt.Sprintf("must be a mapping (line %d)", item.Line), Fix: "write its keys below the `- `, indented"})
			continue
		}
		e := reflect.New(f.Type().Elem()).Elem()
		if d, ok := e.Addr().Interface().(interface{ setDefaults() }); ok {
			d.setDefaults()
		}
		walkNode(item, e, itemKey+".", probs)
		out = reflect.Append(out, e)
	}
	f.Set(out)
}

// setMap stores a YAML mapping of plain strings in a Map field, keeping the
// file's order.
func setMap(f reflect.Value, val *yaml.Node, key string, probs *Problems) {
	items := make([]string, 0, len(val.Content)/2)
	for i := 0; i+1 < len(val.Content); i += 2 {
		k, v := resolveAlias(val.Content[i]), resolveAlias(val.Content[i+1])
		if !plainMapString(k) || !plainMapString(v) {
			*probs = append(*probs, Problem{Key: key, Value: k.Value, Why: fmt.Sprintf("each entry must map a plain name to a plain value, without commas or '=' (line %d)", k.Line),
				Fix: "write one `name: value` per line, for example `b.example.com: 10.0.0.6:8448`"})
			return
		}
		items = append(items, strings.TrimSpace(k.Value)+"="+strings.TrimSpace(v.Value))
	}
	f.SetString(strings.Join(items, ","))
}

func plainMapString(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag != "!!null" && strings.TrimSpace(n.Value) != "" && !strings.ContainsAny(n.Value, ",=")
}

// setList stores a YAML list of plain strings in a List field.
func setList(f reflect.Value, val *yaml.Node, key string, probs *Problems) {
	items := make([]string, 0, len(val.Content))
	for _, it := range val.Content {
		it = resolveAlias(it)
		if it.Kind != yaml.ScalarNode || it.Tag == "!!null" || strings.Contains(it.Value, ",") || strings.TrimSpace(it.Value) == "" {
			*probs = append(*probs, Problem{Key: key, Value: it.Value, Why: fmt.Sprintf("each item must be a non-empty string without commas (line %d)", it.Line),
				Fix: "write one plain value per item, for example [\"turn:turn.example.com:3478?transport=udp\"]"})
			return
		}
		items = append(items, strings.TrimSpace(it.Value))
	}
	f.SetString(strings.Join(items, ","))
}

// displayKey shows a key from a file so that an empty key, or one with
// spaces or control characters, stays visible in a message.
func displayKey(k string) string {
	if k == "" {
		return "(empty key)"
	}
	for _, r := range k {
		if !unicode.IsGraphic(r) || unicode.IsSpace(r) {
			return strconv.Quote(k)
		}
	}
	return k
}

// resolveAlias follows a YAML alias (*name) to the node its anchor names.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func fieldsByKey(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag != "" && tag != "-" {
			m[tag] = i
		}
	}
	return m
}

func setScalar(f reflect.Value, s string) error {
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.ToLower(s))
		if err != nil {
			switch strings.ToLower(s) {
			case "yes", "on":
				b = true
			case "no", "off":
				b = false
			default:
				return err
			}
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		f.SetInt(n)
	case reflect.Float64:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return err
		}
		f.SetFloat(x)
	default:
		return fmt.Errorf("unsupported kind %s", f.Kind())
	}
	return nil
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "a whole number"
	case reflect.Float64:
		return "a number"
	}
	return "a string"
}

func exampleOf(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "a number such as 10, without quotes or units"
	case reflect.Float64:
		return "a number such as 2.5"
	}
	return "a string"
}

func maskIfSecret(key, value string) string {
	if strings.Contains(key, "secret") || strings.HasSuffix(key, "password") {
		return "xxxxx"
	}
	if key == "database" {
		return redactURL(value)
	}
	if key == "nats.url" {
		return RedactNATS(value)
	}
	return value
}

// suggest returns the known key closest to an unknown one, if close enough.
func suggest(unknown string, fields map[string]int) string {
	best, bestD := "", 4
	for k := range fields {
		if d := editDistance(unknown, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// EnvName is the environment variable of a key path such as "registration.open".
func EnvName(key string) string {
	return "HAVEN_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Keys lists every key path, such as "registration.open", in declaration order.
func Keys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			key := prefix + strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if t.Field(i).Type.Kind() == reflect.Struct {
				walk(t.Field(i).Type, key+".")
				continue
			}
			if t.Field(i).Type.Kind() == reflect.Slice {
				continue // a list of mappings (oidc.providers): file only
			}
			keys = append(keys, key)
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return keys
}

// applyEnv applies HAVEN_* variables; an unknown HAVEN_ variable is a problem too.
func applyEnv(cfg *Config, environ []string) Problems {
	var probs Problems
	known := map[string]reflect.Value{}
	keyOf := map[string]string{}
	var collect func(v reflect.Value, prefix string)
	collect = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			key := prefix + strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if v.Field(i).Kind() == reflect.Struct {
				collect(v.Field(i), key+".")
				continue
			}
			if v.Field(i).Kind() == reflect.Slice {
				continue
			}
			known[EnvName(key)] = v.Field(i)
			keyOf[EnvName(key)] = key
		}
	}
	collect(reflect.ValueOf(cfg).Elem(), "")
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "HAVEN_") || strings.HasPrefix(name, "HAVEN_TEST_") {
			continue
		}
		f, ok := known[name]
		if !ok {
			probs = append(probs, Problem{Key: name, Why: "is not a Haven setting (environment variable)", Fix: "unset it, or use one of the HAVEN_* names listed by `haven generate-config`"})
			continue
		}
		if err := setScalar(f, value); err != nil {
			probs = append(probs, Problem{Key: name, Value: maskIfSecret(keyOf[name], value), Why: "must be " + kindName(f.Kind()), Fix: "set it to " + exampleOf(f.Kind())})
		} else if f.Type() == mapType {
			f.SetString(normalizeMap(value))
		}
	}
	return probs
}

// Marshal renders the configuration as YAML (secrets masked), for diagnostics.
func (c Config) Marshal() string {
	cc := c
	if cc.Registration.SharedSecret != "" {
		cc.Registration.SharedSecret = "xxxxx"
	}
	if cc.TURN.SharedSecret != "" {
		cc.TURN.SharedSecret = "xxxxx"
	}
	if cc.Email.SMTPPassword != "" {
		cc.Email.SMTPPassword = "xxxxx"
	}
	if len(cc.OIDC.Providers) > 0 {
		ps := append([]OIDCProvider(nil), cc.OIDC.Providers...)
		for i := range ps {
			if ps[i].ClientSecret != "" {
				ps[i].ClientSecret = "xxxxx"
			}
		}
		cc.OIDC.Providers = ps
	}
	cc.Database = redactURL(cc.Database)
	cc.NATS.URL = RedactNATS(cc.NATS.URL)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	_ = enc.Encode(cc)
	return b.String()
}
