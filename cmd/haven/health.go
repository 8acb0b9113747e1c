package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/haven-chat/haven/server"
	"github.com/haven-chat/haven/storage"
)

// Nagios and Zabbix plugin states, worst last.
const (
	stateOK = iota
	stateWarning
	stateCritical
	stateUnknown
)

var stateNames = []string{"OK", "WARNING", "CRITICAL", "UNKNOWN"}

type healthItem struct {
	state int
	text  string
	perf  string // Nagios performance data, may be empty
}

// runHealth checks, from this machine, what a monitoring system needs to
// know, and prints one line in the Nagios plugin format with the exit
// code of the worst state: the database answers (and its schema is one
// this binary knows), the running server is ready (its /health/ready: the
// bus, the database, the disk as it sees them), the data folder's disk
// has room, the federation certificate is not about to expire.
func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := flagSet("health", stderr)
	url := fs.String("url", "", "the client API address of the running server (default: from listen)")
	if code := parse(fs, args); code >= 0 {
		if code == 2 {
			return stateUnknown
		}
		return code
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		fmt.Fprintln(stdout, "HAVEN UNKNOWN - the configuration has problems (haven check-config)")
		return stateUnknown
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var items []healthItem

	// The database.
	t, err := storage.ParseTarget(cfg.Database, cfg.DataDir)
	switch {
	case err != nil:
		items = append(items, healthItem{state: stateUnknown, text: "database setting: " + err.Error()})
	default:
		items = append(items, checkDatabase(ctx, t))
	}

	// The running server's own view.
	base := *url
	if base == "" {
		host := cfg.Listen
		if strings.HasPrefix(host, "0.0.0.0:") || strings.HasPrefix(host, ":") {
			host = "127.0.0.1" + host[strings.LastIndexByte(host, ':'):]
		}
		base = "http://" + host
	}
	items = append(items, checkServer(ctx, base))

	// The disk.
	if d, err := server.Disk(cfg.DataDir); err != nil {
		items = append(items, healthItem{state: stateUnknown, text: "disk: " + err.Error()})
	} else {
		st := stateOK
		if d.Free < 1<<30 || d.Percent() < 10 {
			st = stateWarning
		}
		if d.Free < 256<<20 || d.Percent() < 2 {
			st = stateCritical
		}
		items = append(items, healthItem{state: st, text: "disk " + d.String(),
			perf: fmt.Sprintf("disk_free_bytes=%dB;%d;%d;0;%d", d.Free, uint64(1<<30), uint64(256<<20), d.Total)})
	}

	// The newest backup, when a backup folder is configured.
	if cfg.Backup.Dir != "" {
		items = append(items, checkBackupAge(cfg, time.Now()))
	}

	// The federation certificate.
	if cfg.Federation.Enabled && cfg.Federation.TLSCert != "" {
		items = append(items, checkCertificate(cfg.Federation.TLSCert, time.Now()))
	}

	worst := stateOK
	var texts, perf []string
	for _, it := range items {
		if rank(it.state) > rank(worst) {
			worst = it.state
		}
		texts = append(texts, it.text)
		if it.perf != "" {
			perf = append(perf, it.perf)
		}
	}
	line := "HAVEN " + stateNames[worst] + " - " + strings.Join(texts, "; ")
	if len(perf) > 0 {
		line += " | " + strings.Join(perf, " ")
	}
	fmt.Fprintln(stdout, line)
	return worst
}

// rank orders states by how bad they are: CRITICAL above UNKNOWN above
// WARNING above OK.
func rank(s int) int {
	return map[int]int{stateOK: 0, stateWarning: 1, stateUnknown: 2, stateCritical: 3}[s]
}

func checkDatabase(ctx context.Context, t storage.Target) healthItem {
	if t.Dialect == storage.SQLite {
		if _, err := os.Stat(t.Path); err != nil {
			return healthItem{state: stateCritical, text: "database " + t.Redacted() + " does not exist"}
		}
	}
	start := time.Now()
	db, err := storage.Connect(ctx, t, storage.Options{MaxOpenConns: 1})
	if err == nil {
		defer db.Close()
		err = db.Ping(ctx)
	}
	if err != nil {
		return healthItem{state: stateCritical, text: "database does not answer: " + err.Error()}
	}
	took := time.Since(start)
	if _, pending, err := db.Pending(ctx); err != nil {
		var newer *storage.SchemaNewerError
		if errors.As(err, &newer) {
			return healthItem{state: stateCritical, text: "database: " + err.Error()}
		}
		return healthItem{state: stateUnknown, text: "database schema: " + err.Error()}
	} else if len(pending) > 0 {
		return healthItem{state: stateWarning, text: fmt.Sprintf("database: %d migration(s) pending (haven migrate)", len(pending))}
	}
	return healthItem{state: stateOK, text: "database ok", perf: fmt.Sprintf("database_seconds=%.4fs", took.Seconds())}
}

func checkServer(ctx context.Context, base string) healthItem {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(base, "/")+"/health/ready", nil)
	if err != nil {
		return healthItem{state: stateUnknown, text: "server address: " + err.Error()}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return healthItem{state: stateCritical, text: "server at " + base + " does not answer"}
	}
	defer resp.Body.Close()
	var body struct {
		Checks map[string]struct {
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body)
	if resp.StatusCode == http.StatusOK {
		return healthItem{state: stateOK, text: "server ready"}
	}
	var failed []string
	for name, c := range body.Checks {
		if !c.OK {
			failed = append(failed, name+": "+c.Detail)
		}
	}
	return healthItem{state: stateCritical, text: fmt.Sprintf("server not ready (%d): %s", resp.StatusCode, strings.Join(failed, ", "))}
}

func checkCertificate(path string, now time.Time) healthItem {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return healthItem{state: stateCritical, text: "federation certificate: " + err.Error()}
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return healthItem{state: stateCritical, text: "federation certificate " + path + " is not PEM"}
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return healthItem{state: stateCritical, text: "federation certificate: " + err.Error()}
	}
	left := cert.NotAfter.Sub(now)
	days := int(left.Hours() / 24)
	perf := fmt.Sprintf("certificate_days=%d;14;3", days)
	switch {
	case left <= 0:
		return healthItem{state: stateCritical, text: "federation certificate expired on " + cert.NotAfter.UTC().Format("2006-01-02"), perf: perf}
	case left < 3*24*time.Hour:
		return healthItem{state: stateCritical, text: fmt.Sprintf("federation certificate expires in %d day(s)", days), perf: perf}
	case left < 14*24*time.Hour:
		return healthItem{state: stateWarning, text: fmt.Sprintf("federation certificate expires in %d days", days), perf: perf}
	}
	return healthItem{state: stateOK, text: fmt.Sprintf("federation certificate valid %d more days", days), perf: perf}
}
