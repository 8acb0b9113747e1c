package loadtest

// `haven loadtest-federation`: the federation benchmarks. The command starts
// two Haven sites itself (fedsites.go), from the haven binary, so that it
// can stop and restart one of them, and runs one scenario:
//
//   - messages: rooms whose members are on both sites (--layout split: the
//     members alternate between A and B, so that senders alternate too) or
//     on A only (--layout local: the one-site baseline at the same rate),
//     messages at --rate, delivery latency of each message to each other
//     member's /sync long-poll, split into deliveries to the other site and
//     to the sender's own; CPU of both processes per message.
//   - catchup: rooms as in split; B stops; A's members send
//     --catchup-messages; B starts again; the time from B's start until the
//     newest message of every room is in a B member's /sync, and how many
//     of the messages sent while B was down B then holds (/messages).
//   - join: a room on A with --join-members joined local members; a user
//     of B joins it (/join with server_name=A); the /join is timed.
//   - todevice: a user of A sends to-device messages to
//     --todevice-devices devices on B in one request, --todevice-rate
//     times a second; the time until every device's /sync has its message
//     (fedtodevice.go).
//   - keysquery: --keys-users users of B upload device keys and join a
//     room of A; a user of A asks /keys/query for all of them, once cold
//     and --keys-rounds times warm (fedkeysquery.go).
//
// fedmsg.go, fedcatchup.go and fedjoin.go hold the scenarios.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FederationUsage is the one-line description of `haven loadtest-federation`.
const FederationUsage = "benchmark federation between two sites it starts from this binary: --scenario messages|catchup|join|todevice|keysquery (see --help)"

// fedOptions are the flags of haven loadtest-federation.
type fedOptions struct {
	Scenario        string
	Bin, Dir        string
	Keep            bool
	Layouts         []string
	Rooms, Members  int
	Rate            float64
	Duration        time.Duration
	Warmup, Grace   time.Duration
	CatchupMessages int
	CatchupWorkers  int
	CatchupTimeout  time.Duration
	JoinMembers     int
	JoinRooms       int
	JoinWarm        int
	ToDeviceDevices int
	ToDeviceRate    float64
	KeysUsers       int
	KeysRounds      int
	Profile         bool
	ProfileSeconds  int
	JSON            bool
	Concurrency     int
	TimelineLimit   int
	SyncTimeout     time.Duration
	SiteEnv         []string
	Prefix          string
}

// fedEnvFlag collects repeated --site-env KEY=VALUE flags.
type fedEnvFlag struct{ vals *[]string }

func (f fedEnvFlag) String() string {
	if f.vals == nil {
		return ""
	}
	return strings.Join(*f.vals, " ")
}

func (f fedEnvFlag) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || !strings.HasPrefix(k, "HAVEN_") {
		return fmt.Errorf("%q: give HAVEN_NAME=VALUE", v)
	}
	*f.vals = append(*f.vals, v)
	return nil
}

func parseFedFlags(args []string, stderr io.Writer) (fedOptions, int) {
	var o fedOptions
	var layouts string
	fs := flag.NewFlagSet("loadtest-federation", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Scenario, "scenario", "messages", "messages, catchup, join, todevice or keysquery (see docs/benchmarks.md, \"Federation\")")
	fs.StringVar(&o.Bin, "bin", "", "the haven binary the sites run (default: this one)")
	fs.StringVar(&o.Dir, "dir", "", "folder for the sites' data, logs, certificates and profiles (default: a new temporary one, removed at the end)")
	fs.BoolVar(&o.Keep, "keep", false, "keep a temporary --dir")
	fs.StringVar(&layouts, "layout", "split", "messages: split (room members alternate between the sites), local (all on site A: the one-site baseline), or split,local (both, each on new sites; reports the CPU ratio)")
	fs.IntVar(&o.Rooms, "rooms", 10, "messages, catchup: number of rooms")
	fs.IntVar(&o.Members, "members", 10, "messages, catchup: members per room (split: half on each site)")
	fs.Float64Var(&o.Rate, "rate", 100, "messages: messages per second in total")
	fs.DurationVar(&o.Duration, "duration", 60*time.Second, "messages: length of the measured window")
	fs.DurationVar(&o.Warmup, "warmup", 5*time.Second, "messages: load before the window, not counted")
	fs.DurationVar(&o.Grace, "grace", 10*time.Second, "messages: how long after the last send a message may take to reach every member before it counts as lost")
	fs.IntVar(&o.CatchupMessages, "catchup-messages", 10000, "catchup: messages site A's members send while site B is down")
	fs.IntVar(&o.CatchupWorkers, "catchup-workers", 16, "catchup: sends in flight at once while B is down")
	fs.DurationVar(&o.CatchupTimeout, "catchup-timeout", 5*time.Minute, "catchup: give up waiting for B to catch up after this")
	fs.IntVar(&o.JoinMembers, "join-members", 1000, "join: joined members of the room on site A")
	fs.IntVar(&o.JoinRooms, "join-rooms", 1, "join: rooms to build and join (each a cold join)")
	fs.IntVar(&o.JoinWarm, "join-warm", 2, "join: further users of B who join each room after the first (B is in the room by then)")
	fs.IntVar(&o.ToDeviceDevices, "todevice-devices", 100, "todevice: target devices on site B (one user each) of every fan-out")
	fs.Float64Var(&o.ToDeviceRate, "todevice-rate", 5, "todevice: fan-outs per second")
	fs.IntVar(&o.KeysUsers, "keys-users", 100, "keysquery: users of site B named in each /keys/query")
	fs.IntVar(&o.KeysRounds, "keys-rounds", 200, "keysquery: warm queries, one after another")
	fs.BoolVar(&o.Profile, "profile", false, "save both sites' CPU profiles of the measured part into --dir (cpu-*.pprof)")
	fs.IntVar(&o.ProfileSeconds, "profile-seconds", 10, "catchup, join: length of the CPU profiles")
	fs.BoolVar(&o.JSON, "json", false, "print the report as JSON on stdout (the text report then goes to stderr)")
	fs.IntVar(&o.Concurrency, "concurrency", 16, "parallel requests during setup")
	fs.IntVar(&o.TimelineLimit, "timeline-limit", 20, "timeline limit of the users' /sync filter")
	fs.DurationVar(&o.SyncTimeout, "sync-timeout", 30*time.Second, "long-poll timeout of each /sync")
	fs.Var(fedEnvFlag{&o.SiteEnv}, "site-env", "an extra HAVEN_NAME=VALUE setting for both sites (repeatable)")
	fs.StringVar(&o.Prefix, "prefix", "fl", "prefix of the account names")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: haven loadtest-federation --scenario messages|catchup|join|todevice|keysquery [flags]")
		fmt.Fprintln(stderr, "Starts two Haven sites (SQLite, loopback, mutual TLS with a CA made for the run) from the haven binary and")
		fmt.Fprintln(stderr, "measures federation between them. Exit codes: 0 every target met, 1 error, 2 bad flags, 3 messages lost, 4 a target not met.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, 0
		}
		return o, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "haven loadtest-federation: unexpected argument %q\n", fs.Arg(0))
		return o, 2
	}
	o.Layouts = strings.Split(layouts, ",")
	if err := o.check(); err != nil {
		fmt.Fprintln(stderr, "haven loadtest-federation:", err)
		return o, 2
	}
	return o, -1
}

func (o fedOptions) check() error {
	var errs []error
	switch o.Scenario {
	case "messages", "catchup", "join", "todevice", "keysquery":
	default:
		errs = append(errs, fmt.Errorf("--scenario %q: use messages, catchup, join, todevice or keysquery", o.Scenario))
	}
	for _, l := range o.Layouts {
		if l != "split" && l != "local" {
			errs = append(errs, fmt.Errorf("--layout %q: use split, local or split,local", l))
		}
	}
	if o.Rooms < 1 || o.Members < 2 || o.Rate <= 0 || o.Duration <= 0 || o.CatchupMessages < o.Rooms || o.CatchupWorkers < 1 ||
		o.JoinMembers < 1 || o.JoinRooms < 1 || o.JoinWarm < 0 || o.Concurrency < 1 || o.TimelineLimit < 1 || o.ProfileSeconds < 1 {
		errs = append(errs, errors.New("--rooms, --rate, --duration, --catchup-workers, --join-members, --join-rooms, --concurrency, --timeline-limit and --profile-seconds must be at least 1, --members at least 2, --catchup-messages at least --rooms"))
	}
	if o.KeysUsers < 1 || o.KeysRounds < 1 {
		errs = append(errs, errors.New("--keys-users and --keys-rounds must be at least 1"))
	}
	if o.ToDeviceDevices < 1 || o.ToDeviceRate <= 0 {
		errs = append(errs, errors.New("--todevice-devices must be at least 1 and --todevice-rate above 0"))
	}
	if o.SyncTimeout < time.Second {
		errs = append(errs, errors.New("--sync-timeout must be at least 1s"))
	}
	if !ltPrefixRE.MatchString(o.Prefix) {
		errs = append(errs, fmt.Errorf("--prefix %q: use lower-case letters, digits and ._=/- only", o.Prefix))
	}
	return errors.Join(errs...)
}

// fedTarget is one target of the product, measured.
type fedTarget struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// FedReport is what a loadtest-federation run measured.
type FedReport struct {
	RunID     string              `json:"run_id"`
	Started   time.Time           `json:"started"`
	Scenario  string              `json:"scenario"`
	Args      []string            `json:"args"`
	Messages  []*fedMsgReport     `json:"messages,omitempty"`
	CPURatio  *float64            `json:"cpu_per_message_split_over_local,omitempty"`
	Catchup   *fedCatchupReport   `json:"catchup,omitempty"`
	Join      *fedJoinReport      `json:"join,omitempty"`
	ToDevice  *fedToDeviceReport  `json:"todevice,omitempty"`
	KeysQuery *fedKeysQueryReport `json:"keysquery,omitempty"`
	Targets   []fedTarget         `json:"targets,omitempty"`
	Notes     []string            `json:"notes,omitempty"`
	Dir       string              `json:"dir,omitempty"`
	Error     string              `json:"error,omitempty"`
}

func (r *FedReport) note(format string, a ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, a...))
}

func (r *FedReport) target(name, want, got string, met bool) {
	r.Targets = append(r.Targets, fedTarget{Name: name, Want: want, Got: got, Met: met})
}

// fedRun is one run of the command.
type fedRun struct {
	o      fedOptions
	bin    string
	dir    string
	secret string
	runID  string
	rep    *FedReport
	logf   func(string, ...any)

	a, b *fedSite
}

// RunFederation runs `haven loadtest-federation` and returns the exit code.
func RunFederation(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, code := parseFedFlags(args, stderr)
	if code >= 0 {
		return code
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s loadtest-federation: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
	}
	r := &fedRun{o: o, logf: logf, runID: newRunID(), secret: "fed-bench-" + newRunID() + newRunID()}
	r.rep = &FedReport{RunID: r.runID, Started: time.Now(), Scenario: o.Scenario, Args: args}
	err := r.prepare()
	if err == nil {
		err = r.run(ctx)
	}
	if err != nil {
		r.rep.Error = err.Error()
	}
	if o.Dir == "" && !o.Keep && r.dir != "" {
		os.RemoveAll(r.dir)
	} else {
		r.rep.Dir = r.dir
	}
	text := stdout
	if o.JSON {
		text = stderr
	}
	r.rep.writeText(text)
	if o.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(r.rep); jerr != nil {
			fmt.Fprintln(stderr, "haven loadtest-federation: JSON:", jerr)
			return 1
		}
	}
	switch {
	case err != nil:
		return 1
	case r.lost():
		return 3
	}
	for _, t := range r.rep.Targets {
		if !t.Met {
			return 4
		}
	}
	return 0
}

func (r *fedRun) lost() bool {
	for _, m := range r.rep.Messages {
		if m.Lost > 0 {
			return true
		}
	}
	return false
}

func (r *fedRun) prepare() error {
	r.bin = r.o.Bin
	if r.bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("the haven binary: %w (give --bin)", err)
		}
		r.bin = exe
	}
	r.dir = r.o.Dir
	if r.dir == "" {
		d, err := os.MkdirTemp("", "haven-fedbench-")
		if err != nil {
			return fmt.Errorf("work folder: %w", err)
		}
		r.dir = d
	} else if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return fmt.Errorf("work folder: %w", err)
	}
	return nil
}

func (r *fedRun) run(ctx context.Context) error {
	switch r.o.Scenario {
	case "messages":
		return r.messages(ctx)
	case "catchup":
		return r.catchup(ctx)
	case "todevice":
		return r.toDevice(ctx)
	case "keysquery":
		return r.keysQuery(ctx)
	}
	return r.join(ctx)
}

// startSites starts new sites A and B in the sub-folder sub of the run's folder.
func (r *fedRun) startSites(ctx context.Context, sub string) error {
	dir := filepath.Join(r.dir, sub)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("sites folder: %w", err)
	}
	a, b, err := newFedSites(dir, r.secret, r.o.SiteEnv)
	if err != nil {
		return err
	}
	r.a, r.b = a, b
	for _, s := range []*fedSite{a, b} {
		if _, _, err := s.start(ctx, r.bin); err != nil {
			r.stopSites()
			return err
		}
	}
	r.logf("sites up: A %s (client %s), B %s (client %s); logs in %s", a.name, a.clientURL, b.name, b.clientURL, dir)
	return nil
}

func (r *fedRun) stopSites() {
	for _, s := range []*fedSite{r.a, r.b} {
		if s != nil {
			s.stop()
		}
	}
}

// newUsers registers the named accounts on a site; user i gets index
// indices[i].
func (r *fedRun) newUsers(ctx context.Context, s *fedSite, localparts []string, indices []int) ([]*ltUser, error) {
	set := &ltSetup{c: s.c, opts: ltOptions{SharedSecret: r.secret, Prefix: r.o.Prefix}, logf: r.logf, workers: r.o.Concurrency}
	users := make([]*ltUser, len(localparts))
	filter := loadFilter(r.o.TimelineLimit)
	err := forEach(ctx, len(localparts), r.o.Concurrency, func(ctx context.Context, i int) error {
		u, err := set.newUser(ctx, indices[i], localparts[i], filter)
		if err != nil {
			return fmt.Errorf("account %s on site %s: %w", localparts[i], s.label, err)
		}
		u.client = s.c
		users[i] = u
		return nil
	})
	return users, err
}

// joinVia joins a room through the given servers.
func (c *mxClient) joinVia(ctx context.Context, token, roomID string, via ...string) error {
	q := url.Values{}
	for _, v := range via {
		q.Add("server_name", v)
	}
	path := "/_matrix/client/v3/join/" + url.PathEscape(roomID)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	_, err := c.do(ctx, "join "+roomID, "POST", path, token, struct{}{}, nil)
	return err
}

// joinedMembers counts the joined members of a room as the server sees it.
func (c *mxClient) joinedMembers(ctx context.Context, token, roomID string) (int, error) {
	var out struct {
		Joined map[string]json.RawMessage `json:"joined"`
	}
	_, err := c.do(ctx, "joined_members", "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", token, nil, &out)
	return len(out.Joined), err
}

// messagesPage is one page of /messages backwards.
func (c *mxClient) messagesPage(ctx context.Context, token, roomID, from string, limit int) ([]ltEvent, string, error) {
	q := url.Values{"dir": {"b"}, "limit": {strconv.Itoa(limit)}}
	if from != "" {
		q.Set("from", from)
	}
	var out struct {
		Chunk []ltEvent `json:"chunk"`
		End   string    `json:"end"`
	}
	_, err := c.do(ctx, "messages", "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?"+q.Encode(), token, nil, &out)
	return out.Chunk, out.End, err
}

// startProfiles starts CPU profiles of secs seconds on the running sites
// (with --profile); the returned func waits for them.
func (r *fedRun) startProfiles(ctx context.Context, name string, secs int) func() {
	if !r.o.Profile {
		return func() {}
	}
	type result struct {
		file string
		err  error
	}
	var sites []*fedSite
	for _, s := range []*fedSite{r.a, r.b} {
		if s.cmd != nil {
			sites = append(sites, s)
		}
	}
	done := make(chan result, len(sites))
	for _, s := range sites {
		file := filepath.Join(r.dir, fmt.Sprintf("cpu-%s-%s.pprof", name, strings.ToLower(s.label)))
		p := s.probe()
		go func() {
			done <- result{file, p.saveProfile(ctx, fmt.Sprintf("profile?seconds=%d", secs), file)}
		}()
	}
	return func() {
		for range sites {
			res := <-done
			if res.err != nil {
				r.rep.note("CPU profile %s not saved: %v", res.file, res.err)
				continue
			}
			r.logf("CPU profile saved to %s", res.file)
		}
	}
}

// writeText prints the report for people.
func (rep *FedReport) writeText(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("haven loadtest-federation run %s, scenario %s, %s", rep.RunID, rep.Scenario, strings.Join(rep.Args, " "))
	for _, m := range rep.Messages {
		m.write(p)
	}
	if rep.CPURatio != nil {
		p("CPU per message, split over local: %.2f", *rep.CPURatio)
	}
	if c := rep.Catchup; c != nil {
		c.write(p)
	}
	if j := rep.Join; j != nil {
		j.write(p)
	}
	if t := rep.ToDevice; t != nil {
		t.write(p)
	}
	if k := rep.KeysQuery; k != nil {
		k.write(p)
	}
	for _, t := range rep.Targets {
		verdict := "MET"
		if !t.Met {
			verdict = "NOT MET"
		}
		p("target %-40s want %-22s got %-30s %s", t.Name, t.Want, t.Got, verdict)
	}
	for _, n := range rep.Notes {
		p("note: %s", n)
	}
	if rep.Dir != "" {
		p("files (logs, profiles): %s", rep.Dir)
	}
	if rep.Error != "" {
		p("ERROR: %s", rep.Error)
	}
}
