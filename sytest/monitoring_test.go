package sytest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"

	"github.com/haven-chat/haven/internal/testca"
)

// The monitoring files operators load (docs/operations.md#monitoring).
const (
	alertRulesFile = "../docs/monitoring/alerts.yml"
	alertTestsFile = "../docs/monitoring/alerts_test.yml"
	dashboardFile  = "../docs/monitoring/grafana-dashboard.json"
)

// notExportedYet are metric names the rules may use before this build
// exports them: the alert then simply never fires.
var notExportedYet = map[string]string{}

// metricName finds the metric names in a PromQL expression (Haven's own,
// the Go client's process_ and go_ ones); label names and values, and
// functions, are not metric names.
var metricName = regexp.MustCompile(`\b(?:haven|process|go)_[a-z0-9_]+\b`)

func exprMetrics(expr string) []string {
	// Drop label matchers ({...}) and quoted strings first.
	expr = regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(expr, "")
	expr = regexp.MustCompile(`"[^"]*"`).ReplaceAllString(expr, "")
	return metricName.FindAllString(expr, -1)
}

// alertExprs reads the expressions of the alert rules.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("%s: %v", alertRulesFile, err)
	}
	out := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: a rule of group %s has no alert name or no expr", alertRulesFile, g.Name)
			}
			out["alert "+r.Alert] = r.Expr
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no rules", alertRulesFile)
	}
	return out
}

// grafanaDashboard is the part of Grafana's dashboard model that Grafana
// needs to import a dashboard and draw its panels.
type grafanaDashboard struct {
	Title         *string                    `json:"title"`
	UID           *string                    `json:"uid"`
	SchemaVersion *int                       `json:"schemaVersion"`
	Time          *struct{ From, To string } `json:"time"`
	Templating    *struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *grafanaDS      `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaPanel struct {
	ID         *int       `json:"id"`
	Type       string     `json:"type"`
	Title      string     `json:"title"`
	Datasource *grafanaDS `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y *int
	} `json:"gridPos"`
	Targets []struct {
		Expr       *string    `json:"expr"`
		RefID      string     `json:"refId"`
		Datasource *grafanaDS `json:"datasource"`
	} `json:"targets"`
	FieldConfig *struct {
		Defaults map[string]any `json:"defaults"`
	} `json:"fieldConfig"`
	Panels []grafanaPanel `json:"panels"` // a row's collapsed panels
}

// readDashboard checks the dashboard against the structure Grafana needs
// and returns its queries, by panel.
func readDashboard(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	var d grafanaDashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s is not a dashboard: %v", dashboardFile, err)
	}
	bad := func(format string, args ...any) { t.Errorf("%s: "+format, append([]any{dashboardFile}, args...)...) }
	if d.Title == nil || *d.Title == "" {
		bad("no title")
	}
	if d.UID == nil || *d.UID == "" || len(*d.UID) > 40 {
		bad("uid missing or longer than Grafana's 40 characters")
	}
	if d.SchemaVersion == nil || *d.SchemaVersion < 36 {
		bad("schemaVersion missing or older than 36 (panels with datasource references)")
	}
	if d.Time == nil || d.Time.From == "" || d.Time.To == "" {
		bad("no time range")
	}
	vars := map[string]string{}
	if d.Templating != nil {
		for _, v := range d.Templating.List {
			if v.Name == "" || v.Type == "" {
				bad("a template variable without name or type")
			}
			vars[v.Name] = v.Type
			if v.Type == "query" && (v.Datasource == nil || len(v.Query) == 0) {
				bad("template variable %s queries nothing or no data source", v.Name)
			}
		}
	}
	if vars["datasource"] != "datasource" {
		bad(`no "datasource" variable of type datasource: the dashboard would be bound to one data source's UID`)
	}
	exprs := map[string]string{}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]string{}
	var walk func(ps []grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			name := fmt.Sprintf("panel %q", p.Title)
			if p.ID == nil || ids[*p.ID] {
				bad("%s: id missing or not unique", name)
			} else {
				ids[*p.ID] = true
			}
			if p.Type == "" || p.Title == "" {
				bad("%s: no type or title", name)
			}
			g := p.GridPos
			if g == nil || g.H == nil || g.W == nil || g.X == nil || g.Y == nil || *g.W < 1 || *g.H < 1 || *g.X < 0 || *g.Y < 0 || *g.X+*g.W > 24 {
				bad("%s: gridPos missing or outside the 24 columns", name)
			} else {
				for x := *g.X; x < *g.X+*g.W; x++ {
					for y := *g.Y; y < *g.Y+*g.H; y++ {
						if other, ok := used[cell{x, y}]; ok {
							bad("%s overlaps %s", name, other)
							x, y = 1<<30, 1<<30
						} else {
							used[cell{x, y}] = name
						}
					}
				}
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
				bad("%s: datasource must be {type: prometheus, uid: ${datasource}}", name)
			}
			if p.FieldConfig == nil || p.FieldConfig.Defaults == nil {
				bad("%s: no fieldConfig.defaults", name)
			}
			if len(p.Targets) == 0 {
				bad("%s: no targets", name)
			}
			refs := map[string]bool{}
			for i, tg := range p.Targets {
				if tg.Expr == nil || strings.TrimSpace(*tg.Expr) == "" {
					bad("%s: target %d has no expr", name, i)
					continue
				}
				if tg.RefID == "" || refs[tg.RefID] {
					bad("%s: target %d has no refId or a repeated one", name, i)
				}
				refs[tg.RefID] = true
				if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
					bad("%s: target %d names another data source", name, i)
				}
				exprs[fmt.Sprintf("%s target %s", name, tg.RefID)] = *tg.Expr
			}
		}
	}
	walk(d.Panels)
	if len(exprs) == 0 {
		bad("no queries")
	}
	return exprs
}

// TestGrafanaDashboardModel: the dashboard has what Grafana's model needs.
func TestGrafanaDashboardModel(t *testing.T) {
	exprs := readDashboard(t)
	for where, e := range exprs {
		if len(exprMetrics(e)) == 0 {
			t.Errorf("%s: %q reads no Haven metric", where, e)
		}
	}
}

// TestAlertRulesPromtool checks the rules with Prometheus's own tool and
// runs their unit tests (scripts/test.sh installs promtool).
func TestAlertRulesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian package prometheus; scripts/test.sh installs it)")
	}
	for _, args := range [][]string{{"check", "rules", alertRulesFile}, {"test", "rules", alertTestsFile}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// scrape reads the names of the samples a /metrics page holds, with their
// values summed over labels.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		out[name] += v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMonitoringMetricsExported starts two federating Haven sites with
// their metrics listeners, makes them serve requests and federate, and
// checks that every metric the alert rules and the dashboard read is on a
// running Haven's /metrics; after a restart (the usage figures are counted
// at start, then every minute) the user and room figures count the users
// and the room.
func TestMonitoringMetricsExported(t *testing.T) {
	ca := testca.New(t)
	cert, key := ca.Issue(t, "localhost")
	portA, portB := freePort(t), freePort(t)
	metricsA, metricsB := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	nameA, nameB := fmt.Sprintf("localhost:%d", portA), fmt.Sprintf("localhost:%d", portB)
	newSite := func(db string, port int, name, partner, metricsAddr string) *site {
		s := startServer(t, db,
			"HAVEN_SERVER_NAME="+name,
			"HAVEN_METRICS_LISTEN="+metricsAddr,
			"HAVEN_FEDERATION_ENABLED=true",
			fmt.Sprintf("HAVEN_FEDERATION_LISTEN=127.0.0.1:%d", port),
			"HAVEN_FEDERATION_TLS_CERT="+cert,
			"HAVEN_FEDERATION_TLS_KEY="+key,
			"HAVEN_FEDERATION_CA_FILE="+ca.File(),
			"HAVEN_FEDERATION_ALLOWED_SERVERS="+name+","+partner,
			"HAVEN_BACKUP_DIR="+t.TempDir(),
		)
		return &site{server: s, name: name, fedAddr: fmt.Sprintf("127.0.0.1:%d", port)}
	}
	a := newSite("sqlite", portA, nameA, nameB, metricsA)
	b := newSite("postgres", portB, nameB, nameA, metricsB)
	ctx := context.Background()
	alice, bob := a.register(t, "alice"), b.register(t, "bob")
	bobSync := startSyncer(t, bob)
	room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	invite(t, alice, room, bob.UserID)
	bobSync.waitFor(t, "the invite", func(r *mautrix.RespSync) bool { return r.Rooms.Invite[room] != nil })
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{a.name}}); err != nil {
		t.Fatal(err)
	}
	sendText(t, alice, room, "hello across")
	bobSync.waitFor(t, "alice's message", func(r *mautrix.RespSync) bool { return timelineHas(r, room, "hello across") })
	bobSync.stopNow()

	wanted := map[string][]string{} // metric → where it is read
	for where, e := range alertExprs(t) {
		for _, m := range exprMetrics(e) {
			wanted[m] = append(wanted[m], where)
		}
	}
	for where, e := range readDashboard(t) {
		for _, m := range exprMetrics(e) {
			wanted[m] = append(wanted[m], where)
		}
	}
	var missing []string
	// Named on failure too (waitUntil ends the test when it gives up).
	report := func() {
		sort.Strings(missing)
		for _, m := range missing {
			t.Errorf("%s is read by %v but not exported", m, wanted[m])
		}
	}
	defer func() {
		if t.Failed() {
			report()
		}
	}()
	waitUntil(t, "every metric the rules and the dashboard read", func() bool {
		got := scrape(t, "http://"+metricsA+"/metrics")
		missing = missing[:0]
		for m := range wanted {
			if _, ok := got[m]; !ok && notExportedYet[m] == "" {
				missing = append(missing, m)
			}
		}
		return len(missing) == 0
	})

	for _, s := range []struct {
		site    *site
		metrics string
	}{{a, metricsA}, {b, metricsB}} {
		s.site.restart()
		var got map[string]float64
		waitUntil(t, s.site.name+"'s usage figures after a restart", func() bool {
			got = scrape(t, "http://"+s.metrics+"/metrics")
			return got["haven_usage_updated_timestamp_seconds"] > 0 && got["haven_ready"] == 1
		})
		for _, m := range []string{"haven_users_registered", "haven_users_active", "haven_users_daily_active", "haven_users_monthly_active",
			"haven_rooms", "haven_rooms_with_local_members"} {
			if got[m] != 1 {
				t.Errorf("%s: %s = %v, want 1", s.site.name, m, got[m])
			}
		}
		if got["haven_users_deactivated"] != 0 || got["haven_users_guests"] != 0 {
			t.Errorf("%s: deactivated %v, guests %v", s.site.name, got["haven_users_deactivated"], got["haven_users_guests"])
		}
		if got["haven_federation_certificate_expiry_timestamp_seconds"] < 1e9 {
			t.Errorf("%s: certificate expiry %v", s.site.name, got["haven_federation_certificate_expiry_timestamp_seconds"])
		}
		if got["haven_ready_check"] != 3 {
			t.Errorf("%s: ready checks passing %v, want 3", s.site.name, got["haven_ready_check"])
		}
	}
}
