package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/server"
)

// fakeProc builds a /proc with the given processes (pid → cmdline args,
// cwd, environment) and makes the commands read it; stdin and the
// environment are replaced too. Not parallel: it sets package variables.
func fakeProc(t *testing.T, procs map[string]struct {
	args []string
	cwd  string
	env  []string
}, input string, env ...string) {
	t.Helper()
	root := t.TempDir()
	for pid, p := range procs {
		dir := filepath.Join(root, pid)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "cmdline"), []byte(strings.Join(p.args, "\x00")+"\x00"), 0o600)
		os.WriteFile(filepath.Join(dir, "environ"), []byte(strings.Join(p.env, "\x00")+"\x00"), 0o600)
		if p.cwd != "" {
			os.Symlink(p.cwd, filepath.Join(dir, "cwd"))
		}
	}
	oldRoot, oldEnv, oldStdin := procRoot, environ, stdin
	procRoot, environ, stdin = root, func() []string { return env }, strings.NewReader(input)
	t.Cleanup(func() { procRoot, environ, stdin = oldRoot, oldEnv, oldStdin })
}

type proc = struct {
	args []string
	cwd  string
	env  []string
}

// serverFolder makes a server's folder with a config whose data_dir is
// relative, and its database.
func serverFolder(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "haven.yaml"), []byte("server_name: example.test\ndata_dir: ./data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	os.MkdirAll(cfg.DataDir, 0o700)
	db, err := server.OpenDB(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	return dir
}

func runCmd(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestCreateUserUsesTheRunningServer(t *testing.T) {
	srv := serverFolder(t)
	fakeProc(t, map[string]proc{
		"4242": {args: []string{"/usr/local/bin/haven", "serve", "--config", "haven.yaml"}, cwd: srv, env: []string{"HAVEN_PASSWORD_HASH_COST=4", "PATH=/usr/bin"}},
		"4243": {args: []string{"/usr/bin/vim", "haven.yaml"}, cwd: srv},
		"4244": {args: []string{"haven", "check-config"}, cwd: t.TempDir()},
	}, "gravel kettle orbit\n", "PATH=/usr/bin")
	stdout, stderr, code := runCmd("create-user", "--user", "alice", "--admin")
	if code != 0 || stdout != "@alice:example.test\n" {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "using the configuration of the running Haven server (pid 4242, folder "+srv+", config "+filepath.Join(srv, "haven.yaml")+")") {
		t.Errorf("does not say whose configuration it used:\n%s", stderr)
	}
	if strings.Contains(stderr, "gravel") {
		t.Errorf("the password was printed:\n%s", stderr)
	}
	// The same again: the account exists in the server's database.
	stdin = strings.NewReader("gravel kettle orbit\n")
	if _, stderr, code = runCmd("create-user", "--user", "alice"); code != 1 || !strings.Contains(stderr, "M_USER_IN_USE") {
		t.Errorf("second alice: exit %d %s", code, stderr)
	}
	if _, err := os.Stat("haven-data"); !os.IsNotExist(err) {
		t.Errorf("a haven-data folder appeared where the command ran: %v", err)
	}
}

func TestCreateUserRefuses(t *testing.T) {
	srv := serverFolder(t)
	other := t.TempDir()
	for _, tc := range []struct {
		name  string
		procs map[string]proc
		env   []string
		args  []string
		input string
		want  []string
	}{
		{"no server and no database here", nil, nil, nil, "gravel kettle orbit\n",
			[]string{"there is no database at ", "no running Haven server was found", "Fix: give the server's configuration", "haven serve"}},
		{"a config whose relative data_dir is not here", nil, nil, []string{"--config", filepath.Join(srv, "haven.yaml")}, "gravel kettle orbit\n",
			[]string{"there is no database at ", "is relative to the folder you run haven in"}},
		{"several servers", map[string]proc{
			"10": {args: []string{"haven"}, cwd: srv, env: []string{}},
			"11": {args: []string{"./haven", "serve"}, cwd: other, env: []string{}},
		}, nil, nil, "gravel kettle orbit\n", []string{"several Haven servers are running (pids 10, 11)", "--config"}},
		{"another user's server", map[string]proc{"12": {args: []string{"haven", "serve"}}}, nil, nil, "gravel kettle orbit\n",
			[]string{"(pid 12), but its folder cannot be read", "sudo -u haven"}},
		{"a common password", map[string]proc{"13": {args: []string{"haven", "--config=haven.yaml"}, cwd: srv, env: []string{"HAVEN_PASSWORD_HASH_COST=4"}}}, nil, nil, "Password2024!\n",
			[]string{"too common", "M_WEAK_PASSWORD"}},
		{"a short password", map[string]proc{"13": {args: []string{"haven", "--config=haven.yaml"}, cwd: srv, env: []string{"HAVEN_PASSWORD_HASH_COST=4"}}}, nil, nil, "xk4\n",
			[]string{"at least 10 characters"}},
		{"no password on stdin", map[string]proc{"13": {args: []string{"haven", "--config=haven.yaml"}, cwd: srv, env: []string{}}}, nil, nil, "",
			[]string{"no password on standard input"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fakeProc(t, tc.procs, tc.input, tc.env...)
			stdout, stderr, code := runCmd(append([]string{"create-user", "--user", "bob"}, tc.args...)...)
			if code != 1 || stdout != "" {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if _, err := os.Stat("haven-data"); !os.IsNotExist(err) {
				t.Fatalf("a haven-data folder appeared: %v", err)
			}
		})
	}
}

func TestParseServeArgs(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		serves bool
		config string
	}{
		{nil, true, ""},
		{[]string{"serve"}, true, ""},
		{[]string{"--config", "/etc/haven.yaml"}, true, "/etc/haven.yaml"},
		{[]string{"serve", "-config=x.yaml"}, true, "x.yaml"},
		{[]string{"create-user", "--config", "x.yaml"}, false, ""},
		{[]string{"health"}, false, ""},
	} {
		s, ok := parseServeArgs(tc.args)
		if ok != tc.serves || (ok && s.config != tc.config) {
			t.Errorf("%q: serves %v config %q", tc.args, ok, s.config)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, tc := range []struct {
		bi   debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{Main: debug.Module{Version: "v1.4.2"}}, "1.4.2"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2025-05-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}},
			"git-0123456789ab-modified (2025-05-01T10:00:00Z)"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "unknown"},
	} {
		if got := versionFrom(&tc.bi); got != tc.want {
			t.Errorf("versionFrom(%+v) = %q, want %q", tc.bi.Main, got, tc.want)
		}
	}
	for _, args := range [][]string{{"--version"}, {"version"}, {"-version"}} {
		stdout, _, code := runCmd(args...)
		if code != 0 || !strings.HasPrefix(stdout, "haven ") || strings.Contains(stdout, "dev") {
			t.Errorf("%v: exit %d %q", args, code, stdout)
		}
	}
}

// check-config reports a database URL whose password holds @ or /
// unencoded, without printing any part of it, and a database file or
// media folder the server could not write.
func TestCheckConfigFirstHourMistakes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stdout, stderr, code := e2eRun(t, dir, e2eEnv("HAVEN_LISTEN="+e2eFreeAddr(t), "HAVEN_DATABASE=postgres://haven:Se@cr/et99@127.0.0.1:5432/test"), "check-config")
	if code != 1 || !strings.Contains(stdout, "database: postgres://haven:xxxxx@127.0.0.1:5432/test — the password (or user name) holds @") ||
		!strings.Contains(stdout, "@ as %40, / as %2F") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, part := range []string{"Se@", "cr/", "et99", "Secr"} {
		if strings.Contains(stdout+stderr, part) {
			t.Errorf("part %q of the password was printed:\n%s%s", part, stdout, stderr)
		}
	}

	if os.Geteuid() == 0 {
		return // root writes everything
	}
	data := filepath.Join(dir, "haven-data")
	os.MkdirAll(filepath.Join(data, "media", "ab"), 0o700)
	os.WriteFile(filepath.Join(data, "haven.db"), nil, 0o400)
	os.Chmod(filepath.Join(data, "media", "ab"), 0o500)
	t.Cleanup(func() { os.Chmod(filepath.Join(data, "media", "ab"), 0o700) })
	stdout, _, code = e2eRun(t, dir, e2eEnv("HAVEN_LISTEN="+e2eFreeAddr(t)), "check-config")
	if code != 1 || !strings.Contains(stdout, "database: "+filepath.Join("haven-data", "haven.db")+" — cannot be written") ||
		!strings.Contains(stdout, "data_dir: "+filepath.Join("haven-data", "media", "ab")+" — the media folder cannot be written") {
		t.Errorf("exit %d\n%s", code, stdout)
	}
}
