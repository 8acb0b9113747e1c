package config

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// checkWritable finds the paths of the SQLite database (with its -wal and
// -shm files) and the media folder tree that the server could not write:
// files made by another user (often root, running a command by hand
// beside a server that runs as its own user). Run as root, it judges for
// the owner of data_dir, the user the server runs as; otherwise for the
// user running the check.
func (c Config) checkWritable() Problems {
	var ps Problems
	serverUID, asRoot := -1, os.Geteuid() == 0
	if asRoot {
		if st, err := os.Stat(c.DataDir); err == nil {
			if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 {
				serverUID = int(sys.Uid)
			}
		}
		if serverUID < 0 {
			return nil // root's own data_dir: root can write everything
		}
	}
	dbPath := filepath.Join(c.DataDir, "haven.db")
	if db, err := parseDatabase(c.Database); err != nil || db.postgres {
		dbPath = ""
	} else if db.path != "" {
		dbPath = db.path
	}
	if dbPath != "" {
		for _, p := range []string{dbPath, dbPath + "-wal", dbPath + "-shm"} {
			if why := notWritable(p, serverUID); why != "" {
				ps = append(ps, Problem{Key: "database", Value: p, Why: why, Fix: ownFix(p, c.DataDir, serverUID, false)})
			}
		}
	}
	media := filepath.Join(c.DataDir, "media")
	seen := 0
	_ = filepath.WalkDir(media, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if seen++; seen > 5000 {
			return filepath.SkipAll // enough to tell
		}
		if why := notWritable(p, serverUID); why != "" {
			ps = append(ps, Problem{Key: "data_dir", Value: p, Why: "the media folder " + why, Fix: ownFix(media, c.DataDir, serverUID, true)})
			return filepath.SkipAll // one is enough to name the fix
		}
		return nil
	})
	return ps
}

// notWritable says why path cannot be written by uid (-1: this process),
// or "" when it can or does not exist.
func notWritable(path string, uid int) string {
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	if uid < 0 {
		if err := syscall.Access(path, 2 /* W_OK */); err != nil {
			return "cannot be written by " + whoami(os.Geteuid()) + ": " + errString(err)
		}
		return ""
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	mode := st.Mode().Perm()
	switch {
	case int(sys.Uid) == uid && mode&0o200 != 0:
		return ""
	case int(sys.Uid) != uid && mode&0o002 != 0:
		return ""
	}
	return fmt.Sprintf("belongs to %s (mode %04o), so the server, running as %s (the owner of data_dir), cannot write it",
		whoami(int(sys.Uid)), mode, whoami(uid))
}

func whoami(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

func ownFix(path, dataDir string, uid int, dir bool) string {
	who := "$(whoami)"
	if uid >= 0 {
		who = whoami(uid)
	}
	target := path + "*"
	if dir {
		target = "-R " + path
	}
	return "give it back to the server's user: chown " + who + " " + target + " (and run commands such as create-user as that user: sudo -u " + who + " haven ...); data_dir is " + dataDir
}
