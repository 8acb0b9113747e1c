// Package mailer sends email through the configured SMTP server
// (config.Email): password reset and address validation messages, and
// notifications of unread messages. Messages are multipart/alternative
// with a plain text and an HTML part, made from templates embedded in the
// binary (templates/, text/template and html/template).
//
// Each Send opens its own connection (these messages are rare), so the
// package starts no goroutines and holds no locks.
package mailer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/haven-chat/haven/internal/config"
)

// Message is one email.
type Message struct {
	To      string
	Subject string
	Text    string
	HTML    string
}

// Mailer sends email through one SMTP server.
type Mailer struct {
	cfg config.Email
	// TLS, when set, is the TLS configuration for the server (tests trust
	// their own CA); by default the system's CAs and the host's name.
	TLS *tls.Config
	// Timeout bounds one message's conversation (30 s).
	Timeout time.Duration
}

// New returns a mailer for the configured server, or nil when email is
// not configured.
func New(cfg config.Email) *Mailer {
	if !cfg.Enabled() {
		return nil
	}
	return &Mailer{cfg: cfg, Timeout: 30 * time.Second}
}

// From is the sender's address (without the display name).
func (m *Mailer) From() string {
	a, err := mail.ParseAddress(m.cfg.From)
	if err != nil {
		return m.cfg.From
	}
	return a.Address
}

func (m *Mailer) tlsConfig() *tls.Config {
	if m.TLS != nil {
		c := m.TLS.Clone()
		if c.ServerName == "" {
			c.ServerName = m.cfg.SMTPHost
		}
		return c
	}
	return &tls.Config{ServerName: m.cfg.SMTPHost, MinVersion: tls.VersionTLS12}
}

// dial connects and greets the server, upgrading to TLS and logging in as
// configured.
func (m *Mailer) dial(ctx context.Context) (*smtp.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()
	addr := net.JoinHostPort(m.cfg.SMTPHost, strconv.Itoa(m.cfg.SMTPPort))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to SMTP server %s: %w", addr, err)
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	if m.cfg.SMTPTLS == "tls" {
		tc := tls.Client(conn, m.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS with SMTP server %s: %w", addr, err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, m.cfg.SMTPHost)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("SMTP greeting of %s: %w", addr, err)
	}
	fail := func(err error) (*smtp.Client, error) {
		c.Close()
		return nil, err
	}
	if err := c.Hello(helloName()); err != nil {
		return fail(fmt.Errorf("SMTP EHLO to %s: %w", addr, err))
	}
	if m.cfg.SMTPTLS == "starttls" {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return fail(fmt.Errorf("SMTP server %s does not offer STARTTLS (set email.smtp_tls to tls for port 465)", addr))
		}
		if err := c.StartTLS(m.tlsConfig()); err != nil {
			return fail(fmt.Errorf("STARTTLS with SMTP server %s: %w", addr, err))
		}
	}
	if m.cfg.SMTPUsername != "" {
		if err := c.Auth(plainAuth{user: m.cfg.SMTPUsername, pass: m.cfg.SMTPPassword, host: m.cfg.SMTPHost, tlsOK: m.cfg.SMTPTLS != "none"}); err != nil {
			return fail(fmt.Errorf("SMTP login to %s as %s: %w", addr, m.cfg.SMTPUsername, err))
		}
	}
	return c, nil
}

// plainAuth is AUTH PLAIN, sent only over TLS or to a server on this host
// (net/smtp's PlainAuth checks the latter by name only).
type plainAuth struct {
	user, pass, host string
	tlsOK            bool
}

func (a plainAuth) Start(server *smtp.ServerInfo) (string, []byte, error) {
	if !server.TLS && !a.tlsOK && !isLoopback(a.host) {
		return "", nil, errors.New("refusing to send the SMTP password without TLS")
	}
	return "PLAIN", []byte("\x00" + a.user + "\x00" + a.pass), nil
}

func (a plainAuth) Next(fromServer []byte, more bool) ([]byte, error) {
	if more {
		return nil, errors.New("unexpected SMTP AUTH challenge")
	}
	return nil, nil
}

func isLoopback(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func helloName() string {
	return "localhost"
}

// Check connects, upgrades to TLS and logs in as Send would, then quits
// without sending anything (haven check-config).
func (m *Mailer) Check(ctx context.Context) error {
	c, err := m.dial(ctx)
	if err != nil {
		return err
	}
	return c.Quit()
}

// Send sends one message.
func (m *Mailer) Send(ctx context.Context, msg Message) error {
	to, err := mail.ParseAddress(msg.To)
	if err != nil {
		return fmt.Errorf("recipient %q: %w", msg.To, err)
	}
	body, err := m.compose(msg, to.Address)
	if err != nil {
		return err
	}
	c, err := m.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail(m.From()); err != nil {
		return fmt.Errorf("SMTP MAIL FROM %s: %w", m.From(), err)
	}
	if err := c.Rcpt(to.Address); err != nil {
		return fmt.Errorf("SMTP RCPT TO %s: %w", to.Address, err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	if _, err := w.Write(body); err != nil {
		return fmt.Errorf("SMTP message: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("SMTP message refused: %w", err)
	}
	return c.Quit()
}

// compose builds the message: headers and a multipart/alternative body
// with quoted-printable text and HTML parts.
func (m *Mailer) compose(msg Message, to string) ([]byte, error) {
	var b bytes.Buffer
	var id [12]byte
	_, _ = rand.Read(id[:])
	domain := m.From()[strings.LastIndex(m.From(), "@")+1:]
	mw := multipart.NewWriter(nil)
	boundary := mw.Boundary()
	hdr := []string{
		"From: " + m.cfg.From,
		"To: " + to,
		"Subject: " + mime.QEncoding.Encode("utf-8", msg.Subject),
		"Date: " + time.Now().Format(time.RFC1123Z),
		"Message-ID: <" + hex.EncodeToString(id[:]) + "@" + domain + ">",
		"MIME-Version: 1.0",
		"Auto-Submitted: auto-generated",
		`Content-Type: multipart/alternative; boundary="` + boundary + `"`,
	}
	for _, h := range hdr {
		if strings.ContainsAny(h, "\r\n") {
			return nil, fmt.Errorf("header %q holds a line break", h)
		}
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	parts := multipart.NewWriter(&b)
	if err := parts.SetBoundary(boundary); err != nil {
		return nil, err
	}
	for _, p := range []struct{ typ, body string }{{"text/plain", msg.Text}, {"text/html", msg.HTML}} {
		if p.body == "" {
			continue
		}
		pw, err := parts.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {p.typ + "; charset=utf-8"},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, err
		}
		qp := quotedprintable.NewWriter(pw)
		if _, err := qp.Write([]byte(strings.ReplaceAll(p.body, "\r\n", "\n"))); err != nil {
			return nil, err
		}
		if err := qp.Close(); err != nil {
			return nil, err
		}
	}
	if err := parts.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
