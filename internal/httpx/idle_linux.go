package httpx

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// idleSet holds connections that wait for their first bytes in one epoll
// instance of its own, with one goroutine for all of them. A connection's
// descriptor stays registered with Go's poller too (edge-triggered), which
// is independent of this set: once delivered, the server reads it as usual.
type idleSet struct {
	epfd    int
	deliver func(net.Conn)

	mu    sync.Mutex
	conns map[int]idleConn // by descriptor; nil once closed
}

type idleConn struct {
	c        net.Conn
	deadline time.Time // zero: none
}

// idleSweep is how often connections past their deadline are closed.
const idleSweep = time.Second

func newIdleSet(deliver func(net.Conn)) *idleSet {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	s := &idleSet{epfd: epfd, deliver: deliver, conns: make(map[int]idleConn)}
	go s.run()
	return s
}

// add registers c until bytes arrive (or its peer hangs up), or until the
// deadline passes. It reports false when c cannot wait here; the caller
// then delivers it itself.
func (s *idleSet) add(c net.Conn, deadline time.Time) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		return false
	}
	added := false
	// Registered inside Control, where the descriptor cannot be closed
	// and its number reused meanwhile.
	err = rc.Control(func(f uintptr) {
		fd := int(f)
		// One-shot and level-triggered: bytes that arrived before this
		// call are reported at once, and each connection is reported once.
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(fd)}
		if syscall.EpollCtl(s.epfd, syscall.EPOLL_CTL_ADD, fd, &ev) == nil {
			s.conns[fd] = idleConn{c: c, deadline: deadline}
			added = true
		}
	})
	return err == nil && added
}

// take removes a connection from the set; the caller holds mu.
func (s *idleSet) take(fd int) (net.Conn, bool) {
	ic, ok := s.conns[fd]
	if !ok {
		return nil, false
	}
	delete(s.conns, fd)
	_ = syscall.EpollCtl(s.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	return ic.c, true
}

func (s *idleSet) run() {
	events := make([]syscall.EpollEvent, 256)
	lastSweep := time.Now()
	var ready, expired []net.Conn
	for {
		n, err := syscall.EpollWait(s.epfd, events, int(idleSweep/time.Millisecond))
		if err != nil && !errors.Is(err, syscall.EINTR) {
			n = 0
		}
		ready, expired = ready[:0], expired[:0]
		s.mu.Lock()
		if s.conns == nil {
			s.mu.Unlock()
			// Closed only here, so that no other descriptor can take the
			// number while this goroutine still waits on it.
			syscall.Close(s.epfd)
			return
		}
		for i := 0; i < n; i++ {
			if c, ok := s.take(int(events[i].Fd)); ok {
				ready = append(ready, c)
			}
		}
		if now := time.Now(); now.Sub(lastSweep) >= idleSweep {
			lastSweep = now
			for fd, ic := range s.conns {
				if !ic.deadline.IsZero() && now.After(ic.deadline) {
					s.take(fd)
					expired = append(expired, ic.c)
				}
			}
		}
		s.mu.Unlock()
		for _, c := range expired {
			c.Close()
		}
		for _, c := range ready {
			s.deliver(c)
		}
		clear(ready)
		clear(expired)
	}
}

func (s *idleSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// close closes every waiting connection; the set's goroutine ends within
// idleSweep.
func (s *idleSet) close() {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	for fd := range conns {
		_ = syscall.EpollCtl(s.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	}
	s.mu.Unlock()
	for _, ic := range conns {
		ic.c.Close()
	}
}
