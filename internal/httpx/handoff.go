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
// memory.
type Handoff struct {
	net.Listener
	accepted chan acceptResult
	back     chan net.Conn
	closed   chan struct{}
	once     sync.Once

	mu     sync.Mutex
	parked map[net.Conn]func()
}

type acceptResult struct {
	c   net.Conn
	err error
}

// NewHandoff wraps a listener.
func NewHandoff(l net.Listener) *Handoff {
	h := &Handoff{Listener: l, accepted: make(chan acceptResult), back: make(chan net.Conn),
		closed: make(chan struct{}), parked: make(map[net.Conn]func())}
	go h.acceptLoop()
	return h
}

func (h *Handoff) acceptLoop() {
	for {
		c, err := h.Listener.Accept()
		select {
		case h.accepted <- acceptResult{c, err}:
		case <-h.closed:
			if c != nil {
				c.Close()
			}
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}
}

// Accept returns the next new or handed-back connection.
func (h *Handoff) Accept() (net.Conn, error) {
	select {
	case r := <-h.accepted:
		return r.c, r.err
	case c := <-h.back:
		return c, nil
	case <-h.closed:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and ends every parked request (cancel is called).
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
	select {
	case p.h.back <- p.conn:
	case <-p.h.closed:
		p.conn.Close()
	}
	return nil
}
