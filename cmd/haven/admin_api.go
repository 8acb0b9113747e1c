package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/userapi"
)

// The "haven admin" commands that work through the running server's admin
// API (/_synapse/admin/) over HTTP, so that they take the same code paths
// as synadm or the synapse-admin web interface and are audited the same
// way. Two ways to reach the server:
//
//   - on the server's machine, with its configuration (--config, or that
//     of the running server as create-user finds it): the command gives an
//     admin account (--as, or the first admin) a device and access token
//     expiring within minutes, calls the client listener of the
//     configuration (or --url), and logs the device out afterwards;
//   - from anywhere, with --url and --token (or HAVEN_ADMIN_TOKEN): an
//     admin's access token.
//
// Tokens are never printed. Errors print the Matrix errcode and message
// and exit 1; bad flags or arguments exit 2.

// apiCommands are the command families of the admin API.
func apiCommands() []command {
	return []command{
		{"users", "accounts through the admin API: list, show, create, deactivate, reset-password, set-admin, whois, devices, delete-device", runAdminUsers},
		{"rooms", "rooms through the admin API: list, show, members, shutdown, block, purge-history", runAdminRooms},
		{"tokens", "registration tokens through the admin API: list, create, delete", runAdminTokens},
		{"media", "media through the admin API: list USER, quarantine SERVER/MEDIA, delete SERVER/MEDIA", runAdminMedia},
		{"stats", "the server's statistics through the admin API", runAdminStats},
	}
}

// mintedTokenLifetime is how long the access token a command gives itself
// lives: long enough for a room shutdown with its purge, short enough to be
// of little use if the command is killed before it logs the device out.
const mintedTokenLifetime = 10 * time.Minute

// cliDeviceName is the display name of a command's own device, as the
// user sees it in their device list while the command runs.
const cliDeviceName = "haven admin (command line)"

// subcommand is one operation of a command family. args are its
// positional arguments, already checked against nargs.
type subcommand struct {
	name  string
	args  string // the positional arguments, for the usage
	nargs int
	flags func(fs *flag.FlagSet) func(ctx context.Context, c *apiClient, args []string, o *output) error
	usage string
}

// output is where a subcommand writes: a table, or with --json the
// server's answer.
type output struct {
	json   bool
	stdout io.Writer
	stderr io.Writer
}

// runFamily dispatches "haven admin FAMILY SUB ARGS [flags]".
func runFamily(ctx context.Context, family string, subs []subcommand, args []string, stdout, stderr io.Writer) int {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: haven admin %s COMMAND [ARGS] [--json] [--config FILE | --url URL --token TOKEN] [--as ADMIN]\n", family)
		for _, s := range subs {
			fmt.Fprintf(w, "  %-40s %s\n", strings.TrimSpace(s.name+" "+s.args), s.usage)
		}
	}
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	for _, s := range subs {
		if s.name != args[0] {
			continue
		}
		name := strings.TrimSpace(family + " " + s.name)
		fs, f := apiFlagSet(name, stderr)
		do := s.flags(fs)
		pos, code := parseInterleaved(fs, args[1:])
		if code >= 0 {
			return code
		}
		if len(pos) != s.nargs {
			fmt.Fprintf(stderr, "haven admin %s: expected %s, got %d arguments\n", name, orNothing(s.args), len(pos))
			return 2
		}
		c, done, code := connectAPI(ctx, name, f, stderr)
		if code >= 0 {
			return code
		}
		err := do(ctx, c, pos, &output{json: *f.json, stdout: stdout, stderr: stderr})
		done()
		return reportAPIError(name, err, stderr)
	}
	fmt.Fprintf(stderr, "haven admin %s: unknown command %q\n", family, args[0])
	usage(stderr)
	return 2
}

func orNothing(s string) string {
	if s == "" {
		return "no arguments"
	}
	return s
}

// usageError is a wrong argument found after parsing (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func badArg(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// reportAPIError prints err and returns the exit code.
func reportAPIError(name string, err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "haven admin %s: %s\n", name, ue.msg)
		return 2
	}
	fmt.Fprintf(stderr, "haven admin %s: %s\n", name, clean(err.Error()))
	return 1
}

// apiFlags are the flags every admin API command has.
type apiFlags struct {
	cfgPath, url, token, as *string
	json                    *bool
}

func apiFlagSet(name string, stderr io.Writer) (*flag.FlagSet, *apiFlags) {
	fs, cfgPath := flagSet("admin "+name, stderr)
	f := &apiFlags{cfgPath: cfgPath}
	f.url = fs.String("url", "", "the server's client URL (default: the listener of the configuration)")
	f.token = fs.String("token", "", "an admin's access token (default: $HAVEN_ADMIN_TOKEN; without one, a short-lived token is made from the configuration's database)")
	f.as = fs.String("as", "", "with the configuration: act as this admin (default: the first admin account)")
	f.json = fs.Bool("json", false, "print the server's JSON answer instead of a table")
	return fs, f
}

// parseInterleaved parses flags placed before, between or after the
// positional arguments, which it returns.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, int) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0
			}
			return nil, 2
		}
		if fs.NArg() == 0 {
			return pos, -1
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func getenv(key string) string {
	for _, kv := range environ() {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// apiClient calls the admin API with one access token.
type apiClient struct {
	base       string // scheme://host[:port][/prefix], no trailing slash
	token      string
	hc         *http.Client
	userID     string // whose token it is
	serverName string // for user IDs given as localparts
}

// apiError is a Matrix error answer.
type apiError struct {
	status    int
	code, msg string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

// path builds a request path from a format whose %s are path segments
// (escaped here).
func path(format string, segs ...string) string {
	a := make([]any, len(segs))
	for i, s := range segs {
		a[i] = url.PathEscape(s)
	}
	return fmt.Sprintf(format, a...)
}

// call sends one request and returns the answer's JSON; a Matrix error
// comes back as *apiError.
func (c *apiClient) call(ctx context.Context, method, p string, q url.Values, body any) (json.RawMessage, error) {
	u := c.base + p
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the message below
		}
		return nil, fmt.Errorf("cannot reach the server at %s (is it running? --url gives its address): %v", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %v", method, p, err)
	}
	if resp.StatusCode >= 300 {
		var me struct {
			Code string `json:"errcode"`
			Msg  string `json:"error"`
		}
		if json.Unmarshal(raw, &me) == nil && me.Code != "" {
			return nil, &apiError{status: resp.StatusCode, code: me.Code, msg: me.Msg}
		}
		snippet := strings.TrimSpace(string(raw))
		if len(snippet) > 200 {
			snippet = snippet[:200] + "…"
		}
		return nil, &apiError{status: resp.StatusCode, code: "HTTP " + strconv.Itoa(resp.StatusCode), msg: snippet + " (is " + c.base + " a Haven server's client URL?)"}
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = []byte("{}")
	}
	if !json.Valid(raw) {
		return nil, fmt.Errorf("%s %s: the answer is not JSON (is %s a Haven server's client URL?)", method, p, c.base)
	}
	return raw, nil
}

// get calls and decodes the answer into out (when not nil).
func (c *apiClient) do(ctx context.Context, method, p string, q url.Values, body, out any) (json.RawMessage, error) {
	raw, err := c.call(ctx, method, p, q, body)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("%s %s: unexpected answer: %v", method, p, err)
		}
	}
	return raw, nil
}

// whoami asks whose the token is.
func (c *apiClient) whoami(ctx context.Context) error {
	var who struct {
		UserID string `json:"user_id"`
	}
	if _, err := c.do(ctx, "GET", "/_matrix/client/v3/account/whoami", nil, nil, &who); err != nil {
		return err
	}
	_, host, ok := userapi.SplitUserID(who.UserID)
	if !ok {
		return fmt.Errorf("the server answered a user ID %q that is not one", who.UserID)
	}
	c.userID, c.serverName = who.UserID, host
	return nil
}

// user turns a user argument into a user ID: a localpart gets the
// server's name.
func (c *apiClient) user(s string) (string, error) {
	if strings.HasPrefix(s, "@") {
		if _, _, ok := userapi.SplitUserID(s); !ok {
			return "", badArg("%q is not a user ID", s)
		}
		return s, nil
	}
	if s == "" || strings.ContainsAny(s, ":/ ") {
		return "", badArg("%q is neither a user name (alice) nor a user ID (@alice:%s)", s, c.serverName)
	}
	return "@" + strings.ToLower(s) + ":" + c.serverName, nil
}

// room turns a room argument into a room ID: a room ID as is, an alias
// (#sales:example.com) through the room directory.
func (c *apiClient) room(ctx context.Context, s string) (string, error) {
	switch {
	case strings.HasPrefix(s, "!") && strings.Contains(s, ":"):
		return s, nil
	case strings.HasPrefix(s, "#") && strings.Contains(s, ":"):
		var dir struct {
			RoomID string `json:"room_id"`
		}
		if _, err := c.do(ctx, "GET", path("/_matrix/client/v3/directory/room/%s", s), nil, nil, &dir); err != nil {
			return "", err
		}
		return dir.RoomID, nil
	}
	return "", badArg("%q is neither a room ID (!abc:%s) nor an alias (#name:%s)", s, c.serverName, c.serverName)
}

// connectAPI sets up the client: with a token (--token or
// HAVEN_ADMIN_TOKEN) as given, else with a token made from the
// configuration's database. done logs a made token's device out.
func connectAPI(ctx context.Context, name string, f *apiFlags, stderr io.Writer) (*apiClient, func(), int) {
	c := &apiClient{hc: &http.Client{Timeout: 5 * time.Minute}}
	token := *f.token
	if token == "" {
		token = getenv("HAVEN_ADMIN_TOKEN")
	}
	if *f.url != "" {
		u, err := url.Parse(*f.url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			fmt.Fprintf(stderr, "haven admin %s: --url must be the server's client URL, such as https://matrix.example.com\n", name)
			return nil, nil, 2
		}
		c.base = strings.TrimRight(*f.url, "/")
	}
	if token != "" {
		if *f.as != "" {
			fmt.Fprintf(stderr, "haven admin %s: --as is for a token made from the configuration; with --token the token's own user acts\n", name)
			return nil, nil, 2
		}
		if c.base == "" {
			cfg, code := apiConfig(name, *f.cfgPath, stderr)
			if code >= 0 {
				return nil, nil, code
			}
			c.base = clientURL(cfg)
		}
		c.token = token
		if err := c.whoami(ctx); err != nil {
			return nil, nil, reportAPIError(name, err, stderr)
		}
		return c, func() {}, -1
	}
	cfg, code := apiConfig(name, *f.cfgPath, stderr)
	if code >= 0 {
		return nil, nil, code
	}
	if c.base == "" {
		c.base = clientURL(cfg)
	}
	// The audit log keeps the token's making and its device's deletion;
	// only warnings go to the terminal.
	if log, err := logging.New(cfg.Logging.Format, "warn", stderr); err == nil {
		ctx = logging.With(ctx, log.WithField("command", "admin "+name))
	}
	m, err := mintToken(ctx, cfg, *f.as)
	if err != nil {
		return nil, nil, reportAPIError(name, err, stderr)
	}
	c.token, c.userID, c.serverName = m.token, m.userID, cfg.ServerName
	return c, func() { m.revoke(c) }, -1
}

// apiConfig loads the server's configuration as create-user does.
func apiConfig(name, cfgPath string, stderr io.Writer) (config.Config, int) {
	cfg, note, err := serverConfig(cfgPath, "admin "+strings.Fields(name)[0])
	if err != nil {
		msg := err.Error()
		fmt.Fprint(stderr, "haven admin ", name, ": ", msg)
		if !strings.HasSuffix(msg, "\n") {
			fmt.Fprintln(stderr)
		}
		return cfg, 1
	}
	if note != "" {
		fmt.Fprintf(stderr, "haven admin %s: %s\n", name, note)
	}
	return cfg, -1
}

// clientURL is the URL of the configuration's client listener as seen
// from this machine.
func clientURL(cfg config.Config) string {
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return "http://" + cfg.Listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// minted is an access token a command made for itself.
type minted struct {
	token, userID, deviceID string
	db                      *storage.DB
	users                   *userapi.Service
	ctx                     context.Context // the command's logger, not its cancellation
}

// mintToken gives an admin account (as, or the first admin) a new device
// whose access token expires within minutes.
func mintToken(ctx context.Context, cfg config.Config, as string) (*minted, error) {
	if err := existingDatabase(cfg, "", "admin"); err != nil {
		return nil, err
	}
	t, err := storage.ParseTarget(cfg.Database, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	db, err := storage.Connect(ctx, t, storage.Options{MaxOpenConns: 2, SQLiteSynchronous: cfg.SQLiteSynchronous})
	if err != nil {
		return nil, err
	}
	users, err := userapi.New(ctx, db, nil, userapi.Options{ServerName: cfg.ServerName, PasswordHashCost: cfg.PasswordHashCost, Audit: audit.New(db)})
	if err != nil {
		db.Close()
		return nil, err
	}
	adminID, err := pickAdmin(ctx, users, as)
	if err != nil {
		db.Close()
		return nil, err
	}
	sess, err := users.LoginAs(ctx, adminID, adminID, time.Now().Add(mintedTokenLifetime).UnixMilli())
	if err != nil {
		db.Close()
		return nil, meaning(err)
	}
	m := &minted{token: sess.AccessToken, userID: adminID, deviceID: sess.DeviceID, db: db, users: users, ctx: context.WithoutCancel(ctx)}
	if err := users.SetDeviceName(ctx, adminID, sess.DeviceID, cliDeviceName); err != nil {
		m.revoke(nil)
		return nil, err
	}
	return m, nil
}

// pickAdmin checks the --as account, or finds the first admin.
func pickAdmin(ctx context.Context, users *userapi.Service, as string) (string, error) {
	if as == "" {
		yes := true
		list, _, err := users.ListUsers(ctx, userapi.UserFilter{Limit: 1, Admins: &yes, OrderBy: "creation_ts"})
		if err != nil {
			return "", err
		}
		if len(list) == 0 {
			return "", errors.New("there is no admin account to act as: make one with haven create-user --admin --user NAME (or give --url and --token)")
		}
		return list[0].Name, nil
	}
	id := as
	if !strings.HasPrefix(id, "@") {
		id = users.UserID(strings.ToLower(id))
	}
	if !users.IsLocal(id) {
		return "", badArg("--as %s is not a user of this server", as)
	}
	u, err := users.User(ctx, id)
	if err != nil {
		return "", meaning(err)
	}
	if !u.Admin || u.Deactivated {
		return "", fmt.Errorf("M_FORBIDDEN: %s is not a server admin", id)
	}
	return id, nil
}

// meaning turns a service error into the Matrix errcode and message.
func meaning(err error) error {
	if me, ok := merr.As(err); ok {
		return &apiError{code: me.Code, msg: me.Msg}
	}
	return err
}

// revoke logs the device out through the server (which drops the token
// from its caches at once); when that fails, it deletes the device from
// the database, and the token's expiry does the rest.
func (m *minted) revoke(c *apiClient) {
	// Also when the command was interrupted (Ctrl-C).
	ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
	defer cancel()
	defer m.db.Close()
	if c != nil {
		if _, err := c.call(ctx, "POST", "/_matrix/client/v3/logout", nil, struct{}{}); err == nil {
			return
		}
	}
	_ = m.users.DeleteDevices(ctx, m.userID, []string{m.deviceID})
}

// Output.

// emit prints raw (indented) with --json; otherwise calls table.
func (o *output) emit(raw json.RawMessage, table func(w io.Writer)) error {
	if o.json {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err := o.stdout.Write(buf.Bytes())
		return err
	}
	table(o.stdout)
	return nil
}

// emitValue prints v as JSON with --json; otherwise calls table.
func (o *output) emitValue(v any, table func(w io.Writer)) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return o.emit(raw, table)
}

// printTable prints rows under a header, aligned, every cell made safe
// for the terminal (values come from clients).
func printTable(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = orDash(clean(strings.ReplaceAll(c, "\t", " ")))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
}

// printFields prints name: value lines.
func printFields(w io.Writer, fields [][2]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], orDash(clean(f[1])))
	}
	tw.Flush()
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// msTime formats Unix milliseconds (0 or nil: "").
func msTime(ms *int64) string {
	if ms == nil || *ms <= 0 {
		return ""
	}
	return time.UnixMilli(*ms).UTC().Format("2006-01-02 15:04")
}

// byteSize formats a size for people.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// pageOf is one page of a paginated list.
type pageOf struct {
	items []json.RawMessage
	total int64
}

// listPages fetches up to limit items of a paginated admin list: key
// holds the items, totalKey the count, nextKey the next page's from (a
// number or a string of one).
func (c *apiClient) listPages(ctx context.Context, p string, q url.Values, key, totalKey, nextKey string, limit int) (pageOf, error) {
	var out pageOf
	if q == nil {
		q = url.Values{}
	}
	for len(out.items) < limit {
		q.Set("limit", strconv.Itoa(min(limit-len(out.items), 1000)))
		var page map[string]json.RawMessage
		if _, err := c.do(ctx, "GET", p, q, nil, &page); err != nil {
			return out, err
		}
		var items []json.RawMessage
		if err := json.Unmarshal(page[key], &items); err != nil && page[key] != nil {
			return out, fmt.Errorf("GET %s: unexpected %s: %v", p, key, err)
		}
		out.items = append(out.items, items...)
		_ = json.Unmarshal(page[totalKey], &out.total)
		next := strings.Trim(string(page[nextKey]), `"`)
		if next == "" || next == "null" || len(items) == 0 {
			break
		}
		q.Set("from", next)
	}
	if out.items == nil {
		out.items = []json.RawMessage{}
	}
	return out, nil
}

// listLimit checks a --limit.
func listLimit(n int) error {
	if n < 1 || n > 100_000 {
		return badArg("--limit must be between 1 and 100000")
	}
	return nil
}

// boolArg reads true or false.
func boolArg(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0":
		return false, nil
	}
	return false, badArg("%q: give true or false", s)
}

// countLine says how many of how many a list shows.
func countLine(w io.Writer, shown int, total int64, what string) {
	if int64(shown) < total {
		fmt.Fprintf(w, "(%d of %d %s; --limit shows more)\n", shown, total, what)
		return
	}
	fmt.Fprintf(w, "(%d %s)\n", shown, what)
}
