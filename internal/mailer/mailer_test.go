package mailer

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/mailer/smtptest"
	"github.com/haven-chat/haven/internal/testca"
)

func TestSendStartTLSWithLogin(t *testing.T) {
	ca := testca.New(t)
	certFile, keyFile := ca.Issue(t, "127.0.0.1")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := smtptest.Start(t, &tls.Config{Certificates: []tls.Certificate{cert}})
	srv.User, srv.Password = "haven", "s3cret"
	m := New(config.Email{SMTPHost: srv.Host, SMTPPort: srv.Port, SMTPTLS: "starttls", SMTPUsername: "haven", SMTPPassword: "s3cret", From: "Haven Chat <chat@example.com>"})
	m.TLS = &tls.Config{RootCAs: ca.Pool()}
	if err := m.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	msg, err := Render("password_reset", "Älice <alice@example.com>", ValidationData{ServerName: "example.com", Address: "alice@example.com", Link: "https://chat.example.com/x?a=1&b=<2>", Token: "TOKEN"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	got := srv.Mails()
	if len(got) != 1 {
		t.Fatalf("%d mails", len(got))
	}
	g := got[0]
	if !g.TLS || g.Auth != "haven" || g.From != "chat@example.com" || len(g.To) != 1 || g.To[0] != "alice@example.com" {
		t.Fatalf("envelope %+v", g)
	}
	if g.Subject != "Reset your password on example.com" || !strings.Contains(g.Text, "https://chat.example.com/x?a=1&b=<2>") ||
		!strings.Contains(g.HTML, `href="https://chat.example.com/x?a=1&amp;b=%3c2%3e"`) || !strings.Contains(g.Text, "TOKEN") {
		t.Fatalf("message %q\ntext %q\nhtml %q", g.Subject, g.Text, g.HTML)
	}

	// A wrong password or an untrusted certificate fails.
	bad := New(config.Email{SMTPHost: srv.Host, SMTPPort: srv.Port, SMTPTLS: "starttls", SMTPUsername: "haven", SMTPPassword: "wrong", From: "chat@example.com"})
	bad.TLS = &tls.Config{RootCAs: ca.Pool()}
	if err := bad.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "535") {
		t.Fatalf("wrong password: %v", err)
	}
	untrusted := New(config.Email{SMTPHost: srv.Host, SMTPPort: srv.Port, SMTPTLS: "starttls", From: "chat@example.com"})
	if err := untrusted.Check(context.Background()); err == nil {
		t.Fatal("untrusted certificate accepted")
	}
}

func TestSendPlainRelay(t *testing.T) {
	srv := smtptest.Start(t, nil)
	m := New(config.Email{SMTPHost: srv.Host, SMTPPort: srv.Port, SMTPTLS: "none", From: "chat@example.com"})
	if err := m.Send(context.Background(), Message{To: "bob@example.com", Subject: "hi\r\nBcc: x@y", Text: "line\n.dot line\n"}); err != nil {
		t.Fatal(err)
	}
	g := srv.Mails()[0]
	if g.Subject != "hi\r\nBcc: x@y" || strings.Contains(g.Raw, "\r\nBcc:") || !strings.Contains(g.Text, ".dot line") {
		t.Fatalf("mail %+v", g)
	}
	// starttls against a server without it is refused rather than sent in the clear.
	m = New(config.Email{SMTPHost: srv.Host, SMTPPort: srv.Port, SMTPTLS: "starttls", From: "chat@example.com"})
	if err := m.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("got %v", err)
	}
}
