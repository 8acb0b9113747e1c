package httpx

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Handoff is the listener of the HTTP server. Besides new connections it
// accepts connections handed back after a handler took them over (a parked
// /sync): the server then reads their next request as on any connection.
//
// A parked request holds no goroutine and none of the server's buffers, only
// its connection: that is what lets thousands of clients wait in little
// memory. The same holds for a connection with no request yet: a new one,
// or one handed back whose client has not sent its next request. Where the
// system allows (Linux), such connections wait in one epoll set and reach
// the HTTP server (a goroutine, 8 KiB of buffers) only once bytes arrive.
// When every client reconnects at once, after a restart, most connections
// are in that state.
type Handoff struct {
	net.Listener
	ready  chan net.Conn
	errs   chan error
	closed chan struct{}
	once   sync.Once
	// newWait and idleWait bound how long a new connection and a handed
	// back one may wait for their first bytes before they are closed.
	newWait, idleWait time.Duration
	idle              *idleSet   // nil where connections cannot wait in a set
	adm               *admission // paces the connections leaving the set

	mu     sync.Mutex
	parked map[net.Conn]func()

	dmu      sync.Mutex // orders deliveries against Close
	isClosed bool
}

// NewHandoff wraps a listener. newWait is how long a new connection may stay
// silent, idleWait how long a connection handed back after a parked answer
// may wait for its next request (the server's ReadHeaderTimeout and
// IdleTimeout).
//
// Give the server h.ConnState and h.ConnContext as its hooks: they pace
// the connections leaving the set (see admission).
func NewHandoff(l net.Listener, newWait, idleWait time.Duration) *Handoff {
	return newHandoff(l, newWait, idleWait, admissionSlots(), admissionDelay)
}

func newHandoff(l net.Listener, newWait, idleWait time.Duration, slots int, maxDelay time.Duration) *Handoff {
	h := &Handoff{Listener: l, ready: make(chan net.Conn, 256), errs: make(chan error),
		closed: make(chan struct{}), newWait: newWait, idleWait: idleWait, parked: make(map[net.Conn]func())}
	adm := newAdmission(slots, maxDelay, h.deliver, h.closed)
	if h.idle = newIdleSet(adm.enqueue); h.idle != nil {
		h.adm = adm
		go adm.run()
	}
	go h.acceptLoop()
	return h
}

func (h *Handoff) acceptLoop() {
	for {
		c, err := h.Listener.Accept()
		if err == nil {
			h.hold(c, h.newWait)
			continue
		}
		select {
		case h.errs <- err:
		case <-h.closed:
			return
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// hold keeps a connection until its first bytes arrive, then delivers it
// to the server; without a set it delivers at once.
// A wait of 0 means no limit, as for net/http's timeouts.
func (h *Handoff) hold(c net.Conn, wait time.Duration) {
	var deadline time.Time
	if wait > 0 {
		deadline = time.Now().Add(wait)
	}
	if h.idle == nil || !h.idle.add(c, deadline) {
		h.deliver(c)
	}
}

// deliver gives a connection to the server's next Accept, or closes it once
// the Handoff is closed: under dmu, so that none is left in ready after
// Close has drained it.
func (h *Handoff) deliver(c net.Conn) {
	for {
		h.dmu.Lock()
		if h.isClosed {
			h.dmu.Unlock()
			c.Close()
			return
		}
		select {
		case h.ready <- c:
			h.dmu.Unlock()
			return
		default:
		}
		h.dmu.Unlock()
		// ready is full: the server accepts more slowly than connections
		// come.
		select {
		case <-h.closed:
		case <-time.After(time.Millisecond):
		}
	}
}

// Accept returns the next connection that has bytes to read (or, without
// a set, the next new or handed-back connection).
func (h *Handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.ready:
		return c, nil
	case err := <-h.errs:
		return nil, err
	case <-h.closed:
		return nil, net.ErrClosed
	}
}

// Waiting is how many connections wait outside the server: in the set for
// their first bytes, or for a slot.
func (h *Handoff) Waiting() int {
	if h.idle == nil {
		return 0
	}
	return h.idle.len() + h.adm.queueLen()
}

// Close stops accepting, ends every parked request (cancel is called) and
// closes the connections that wait for their first bytes.
func (h *Handoff) Close() error {
	var err error
	h.once.Do(func() {
		close(h.closed)
		err = h.Listener.Close()
		h.mu.Lock()
		cancels := make([]func(), 0, len(h.parked))
		for _, cancel := range h.parked {
			cancels = append(cancels, cancel)
		}
		h.mu.Unlock()
		for _, cancel := range cancels {
			cancel()
		}
		if h.idle != nil {
			h.idle.close()
		}
		// Connections delivered but not yet accepted by the server.
		h.dmu.Lock()
		h.isClosed = true
		for {
			select {
			case c := <-h.ready:
				c.Close()
				continue
			default:
			}
			break
		}
		h.dmu.Unlock()
	})
	return err
}

// Park takes over the connection of a request: the handler returns at once
// and the answer is written later with Answer. It fails when the request
// cannot be taken over (a server that is not using a Handoff, HTTP/2, or
// bytes of a next request already read), and the caller then answers the
// usual way. cancel is called if the server shuts down first.
func (h *Handoff) Park(w http.ResponseWriter, r *http.Request, cancel func()) (*Parked, error) {
	if h == nil || r.ProtoMajor != 1 {
		return nil, errors.New("cannot park this request")
	}
	select {
	case <-h.closed:
		return nil, errors.New("server is closing")
	default:
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	if rw.Reader.Buffered() > 0 {
		// A pipelined request is waiting: keep it simple and answer in place
		// (the connection is ours now, so close it after the answer).
		p := &Parked{h: h, conn: conn, keepAlive: false}
		h.track(conn, cancel)
		return p, nil
	}
	_ = conn.SetDeadline(time.Time{})
	keep := r.ProtoAtLeast(1, 1) && !r.Close
	h.track(conn, cancel)
	return &Parked{h: h, conn: conn, keepAlive: keep}, nil
}

func (h *Handoff) track(c net.Conn, cancel func()) {
	h.mu.Lock()
	h.parked[c] = cancel
	h.mu.Unlock()
}

func (h *Handoff) untrack(c net.Conn) {
	h.mu.Lock()
	delete(h.parked, c)
	h.mu.Unlock()
}

// Parked is a request whose connection waits for its answer.
type Parked struct {
	h         *Handoff
	conn      net.Conn
	keepAlive bool
}

// answerHeaders are the fixed headers of a parked request's answer (JSON,
// not cached, readable from any origin as CORS wants).
const answerHeaders = "Content-Type: application/json\r\nCache-Control: no-store\r\n" +
	"Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Methods: GET, HEAD, POST, PUT, DELETE, OPTIONS\r\n" +
	"Access-Control-Allow-Headers: Origin, X-Requested-With, Content-Type, Accept, Authorization, Date\r\n" +
	"Access-Control-Expose-Headers: ETag, Content-Disposition, Retry-After\r\n"

// Answer writes the response and hands the connection back to the server
// (or closes it). It returns the number of body bytes written.
func (p *Parked) Answer(status int, body []byte) error {
	p.h.untrack(p.conn)
	var b []byte
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\n"...)
	b = append(b, answerHeaders...)
	b = append(b, "Date: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	if !p.keepAlive {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	_ = p.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := (&net.Buffers{b, body}).WriteTo(p.conn)
	if err != nil || !p.keepAlive {
		p.conn.Close()
		return err
	}
	_ = p.conn.SetWriteDeadline(time.Time{})
	p.h.hold(p.conn, p.h.idleWait)
	return nil
}
