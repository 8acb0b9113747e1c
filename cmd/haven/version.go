package main

import (
	"runtime/debug"
	"strings"
)

// Version is the version of this build: set with -ldflags
// "-X main.Version=...", or else read from the build information.
var Version = ""

// version is Version, or the module version the binary was built at
// (go install …@v1.2.3), or the VCS revision of the checkout it was built
// from (with "-modified" when the work tree had changes), or "unknown".
func version() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return versionFrom(bi)
}

func versionFrom(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return strings.TrimPrefix(v, "v")
	}
	var rev, modified, when string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		case "vcs.time":
			when = s.Value
		}
	}
	if rev == "" {
		return "unknown"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v := "git-" + rev
	if modified == "true" {
		v += "-modified"
	}
	if when != "" {
		v += " (" + when + ")"
	}
	return v
}
