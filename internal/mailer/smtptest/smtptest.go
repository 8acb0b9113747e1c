// Package smtptest is a small SMTP server on loopback for tests: it takes
// every message (EHLO, optional STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA)
// and keeps it for the test to read. It speaks enough of RFC 5321 for
// net/smtp and Haven's mailer.
package smtptest

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"
)

// Mail is one received message.
type Mail struct {
	From    string
	To      []string
	Subject string
	// Text and HTML are the decoded parts of a multipart/alternative
	// message (Text is the whole body of a plain one).
	Text, HTML string
	Raw        string
	// TLS tells whether the message came over TLS; Auth is the user that
	// logged in ("" for none).
	TLS  bool
	Auth string
}

// Server is a running test SMTP server.
type Server struct {
	// Addr is host:port on loopback.
	Addr string
	Host string
	Port int
	// User and Password, when set, are required (AUTH PLAIN).
	User, Password string

	ln    net.Listener
	tls   *tls.Config
	mu    sync.Mutex
	mails []Mail
	wg    sync.WaitGroup
}

// Start starts a server; with tlsConf set it offers STARTTLS.
func Start(t testing.TB, tlsConf *tls.Config) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: ln.Addr().String(), ln: ln, tls: tlsConf}
	s.Host = "127.0.0.1"
	s.Port = ln.Addr().(*net.TCPAddr).Port
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

// Mails returns the messages received so far.
func (s *Server) Mails() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Mail(nil), s.mails...)
}

// WaitFor waits until a message matches, and returns it.
func (s *Server) WaitFor(t testing.TB, what string, match func(Mail) bool) Mail {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, m := range s.Mails() {
			if match(m) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no email: %s (got %d others)", what, len(s.Mails()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.session(c)
		}()
	}
}

func (s *Server) session(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	reply := func(line string) {
		w.WriteString(line + "\r\n")
		w.Flush()
	}
	reply("220 smtptest ready")
	var cur Mail
	isTLS := false
	authed := ""
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO":
			ext := []string{"250-smtptest", "250-8BITMIME", "250-AUTH PLAIN"}
			if s.tls != nil && !isTLS {
				ext = append(ext, "250-STARTTLS")
			}
			for _, e := range ext {
				w.WriteString(e + "\r\n")
			}
			reply("250 SIZE 10485760")
		case "STARTTLS":
			if s.tls == nil || isTLS {
				reply("502 not offered")
				continue
			}
			reply("220 go ahead")
			tc := tls.Server(c, s.tls)
			if err := tc.Handshake(); err != nil {
				return
			}
			c, isTLS = tc, true
			r, w = bufio.NewReader(tc), bufio.NewWriter(tc)
		case "AUTH":
			mech, initial, _ := strings.Cut(arg, " ")
			if !strings.EqualFold(mech, "PLAIN") {
				reply("504 only PLAIN")
				continue
			}
			raw, err := base64.StdEncoding.DecodeString(initial)
			parts := strings.Split(string(raw), "\x00")
			if err != nil || len(parts) != 3 || (s.User != "" && (parts[1] != s.User || parts[2] != s.Password)) {
				reply("535 authentication failed")
				continue
			}
			authed = parts[1]
			reply("235 ok")
		case "MAIL":
			if s.User != "" && authed == "" {
				reply("530 authentication required")
				continue
			}
			cur = Mail{From: addrArg(arg), TLS: isTLS, Auth: authed}
			reply("250 ok")
		case "RCPT":
			cur.To = append(cur.To, addrArg(arg))
			reply("250 ok")
		case "DATA":
			if len(cur.To) == 0 {
				reply("503 no recipients")
				continue
			}
			reply("354 end with .")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" || l == ".\n" {
					break
				}
				b.WriteString(strings.TrimPrefix(l, "."))
			}
			cur.Raw = b.String()
			parse(&cur)
			s.mu.Lock()
			s.mails = append(s.mails, cur)
			s.mu.Unlock()
			cur = Mail{}
			reply("250 queued")
		case "RSET":
			cur = Mail{}
			reply("250 ok")
		case "NOOP":
			reply("250 ok")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("500 unknown command")
		}
	}
}

func addrArg(arg string) string {
	_, v, _ := strings.Cut(arg, ":")
	v = strings.TrimSpace(v)
	if i := strings.Index(v, ">"); i >= 0 {
		v = v[:i]
	}
	return strings.TrimPrefix(v, "<")
}

// parse decodes the subject and the text and HTML parts.
func parse(m *Mail) {
	msg, err := mail.ReadMessage(strings.NewReader(m.Raw))
	if err != nil {
		return
	}
	dec := new(mime.WordDecoder)
	if subj, err := dec.DecodeHeader(msg.Header.Get("Subject")); err == nil {
		m.Subject = subj
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		b, _ := io.ReadAll(msg.Body)
		m.Text = string(b)
		return
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			return
		}
		var body io.Reader = p
		if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(p)
		}
		b, _ := io.ReadAll(body)
		switch pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); pt {
		case "text/plain":
			m.Text = string(b)
		case "text/html":
			m.HTML = string(b)
		}
	}
}
