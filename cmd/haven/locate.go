package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/storage"
)

// Commands that work on the server's database (create-user) must use the
// server's: with the default data_dir (./haven-data, relative) run from
// another folder, or without the server's --config, they would create a
// second, empty database and the account would never reach the server.
// So without --config (or HAVEN_* settings) they look for the running
// server and use its configuration, and they never create a SQLite
// database that does not exist yet.

// procRoot is /proc (tests give a fake one).
var procRoot = "/proc"

// environ is the environment of this process (tests replace it).
var environ = os.Environ

// runningServer is a haven process serving, as found in /proc.
type runningServer struct {
	pid    int
	cwd    string // "" when not readable (another user's process)
	config string // its --config, as given ("" for none)
	env    []string
	envOK  bool
}

// runningServers lists the haven processes that serve (no command, or
// serve), except this one.
func runningServers() []runningServer {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var out []runningServer
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		dir := filepath.Join(procRoot, e.Name())
		raw, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) != "haven" {
			continue
		}
		srv, ok := parseServeArgs(args[1:])
		if !ok {
			continue
		}
		srv.pid = pid
		srv.cwd, _ = os.Readlink(filepath.Join(dir, "cwd"))
		if env, err := os.ReadFile(filepath.Join(dir, "environ")); err == nil {
			srv.envOK = true
			for _, kv := range bytes.Split(env, []byte{0}) {
				if len(kv) > 0 {
					srv.env = append(srv.env, string(kv))
				}
			}
		}
		out = append(out, srv)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}

// parseServeArgs reads a haven command line: whether it serves and its
// --config.
func parseServeArgs(args []string) (runningServer, bool) {
	var s runningServer
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		if args[0] != "serve" {
			return s, false
		}
		args = args[1:]
	}
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		if v, ok := strings.CutPrefix(a, "config="); ok {
			s.config = v
		} else if a == "config" && i+1 < len(args) {
			s.config = args[i+1]
			i++
		}
	}
	return s, true
}

// havenSettings tells whether an environment sets any Haven setting.
func havenSettings(env []string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, "HAVEN_") && !strings.HasPrefix(kv, "HAVEN_TEST_") {
			return true
		}
	}
	return false
}

// serverConfig loads the configuration a database command must use:
// --config or this environment's HAVEN_* settings if given, else the
// running server's. note says which was used (for stderr); an error
// explains what is wrong and the fix.
func serverConfig(cfgPath, command string) (cfg config.Config, note string, err error) {
	env := environ()
	if cfgPath == "" && !havenSettings(env) {
		servers := runningServers()
		if len(servers) > 1 {
			// Several servers: the one run from here, if any.
			wd, _ := os.Getwd()
			var here []runningServer
			for _, s := range servers {
				if s.cwd != "" && s.cwd == wd {
					here = append(here, s)
				}
			}
			if len(here) != 1 {
				var pids []string
				for _, s := range servers {
					pids = append(pids, strconv.Itoa(s.pid))
				}
				return cfg, "", fmt.Errorf("several Haven servers are running (pids %s), so it is not clear whose database to use.\n  Fix: give the server's configuration: haven %s --config /path/to/haven.yaml", strings.Join(pids, ", "), command)
			}
			servers = here
		}
		if len(servers) == 1 {
			return loadServerConfig(servers[0], command)
		}
	}
	cfg, probs := config.Load(cfgPath, env)
	if len(probs) > 0 {
		return cfg, "", probs
	}
	return cfg, "", nil
}

// loadServerConfig loads a running server's configuration as it sees it:
// its --config and HAVEN_* settings, relative paths taken from its folder.
func loadServerConfig(s runningServer, command string) (config.Config, string, error) {
	fix := fmt.Sprintf("run this as the server's user (for example sudo -u haven haven %s ...), or give the server's configuration with --config", command)
	if s.cwd == "" {
		return config.Config{}, "", fmt.Errorf("a Haven server is running (pid %d), but its folder cannot be read by this user.\n  Fix: %s", s.pid, fix)
	}
	if !s.envOK {
		return config.Config{}, "", fmt.Errorf("a Haven server is running (pid %d), but its settings cannot be read by this user.\n  Fix: %s", s.pid, fix)
	}
	path := s.config
	if path != "" && !filepath.IsAbs(path) {
		path = filepath.Join(s.cwd, path)
	}
	var env []string
	for _, kv := range s.env {
		if strings.HasPrefix(kv, "HAVEN_") {
			env = append(env, kv)
		}
	}
	cfg, probs := config.Load(path, env)
	if len(probs) > 0 {
		return cfg, "", probs
	}
	if !filepath.IsAbs(cfg.DataDir) {
		cfg.DataDir = filepath.Join(s.cwd, cfg.DataDir)
	}
	if p, ok := strings.CutPrefix(cfg.Database, "sqlite://"); ok && !filepath.IsAbs(p) {
		cfg.Database = "sqlite://" + filepath.Join(s.cwd, p)
	}
	note := fmt.Sprintf("using the configuration of the running Haven server (pid %d, folder %s", s.pid, s.cwd)
	if path != "" {
		note += ", config " + path
	}
	return cfg, note + ")", nil
}

// existingDatabase refuses a SQLite database that does not exist yet: the
// command would create a second one beside the server's.
func existingDatabase(cfg config.Config, cfgPath, command string) error {
	t, err := storage.ParseTarget(cfg.Database, cfg.DataDir)
	if err != nil || t.Dialect != storage.SQLite {
		return err
	}
	if _, err := os.Stat(t.Path); err == nil {
		return nil
	}
	abs, _ := filepath.Abs(t.Path)
	how := "give the server's configuration: haven " + command + " --config /path/to/haven.yaml ..., or run it from the folder the server runs in"
	if cfgPath != "" {
		how = "data_dir (or database) in " + cfgPath + " is relative to the folder you run haven in: make it absolute, or run from the server's folder"
	}
	return fmt.Errorf("there is no database at %s, and no running Haven server was found to take the configuration from; %s would create a new, empty database there that the server does not use.\n  Fix: %s; on a new installation, start the server once (haven serve) to create its database", abs, command, how)
}
