//go:build !linux

package httpx

import (
	"net"
	"time"
)

// idleSet is Linux only; elsewhere connections go to the server at once.
type idleSet struct{}

func newIdleSet(func(net.Conn)) *idleSet      { return nil }
func (*idleSet) add(net.Conn, time.Time) bool { return false }
func (*idleSet) len() int                     { return 0 }
func (*idleSet) close()                       {}
