package client

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/testca"
)

// copyPair copies a certificate and key to fixed paths, so that a test can
// replace the files the way an operator renews them.
func copyPair(t *testing.T, certSrc, keySrc, certDst, keyDst string) {
	t.Helper()
	for src, dst := range map[string]string{certSrc: certDst, keySrc: keyDst} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// serveTLS runs a federation listener built by ServerTLS.
func serveTLS(t *testing.T, cfg config.Federation) (*peer, func() error) {
	t.Helper()
	tlsCfg, reload, err := ServerTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{}
	srv := &http.Server{Handler: http.HandlerFunc(p.serve), ErrorLog: quietLog()}
	go func() { _ = srv.Serve(tls.NewListener(ln, tlsCfg)) }()
	t.Cleanup(func() { _ = srv.Close() })
	_, p.port, _ = net.SplitHostPort(ln.Addr().String())
	return p, reload
}

func TestMutualTLS(t *testing.T) {
	ca, other := testca.New(t), testca.New(t)
	serverCert, serverKey := ca.Issue(t, "b.example")
	b, _ := serveTLS(t, config.Federation{TLSCert: serverCert, TLSKey: serverKey, CAFile: ca.File(), MutualTLS: true})
	servers := config.Map("b.example=127.0.0.1:" + b.port)
	ourCert, ourKey := ca.Issue(t, "a.example")
	strangerCert, strangerKey := other.Issue(t, "a.example")
	ctx := context.Background()

	c := newClient(t, config.Federation{CAFile: ca.File(), Servers: servers, MutualTLS: true, TLSCert: ourCert, TLSKey: ourKey}, nil)
	if _, err := c.ServerKeys(ctx, "b.example"); err != nil {
		t.Fatalf("with our certificate: %v", err)
	}
	if got := b.last(t); got.clientCN != "a.example" {
		t.Fatalf("the server saw client certificate %q", got.clientCN)
	}
	seen := b.count()
	for name, cfg := range map[string]config.Federation{
		"no client certificate":                 {CAFile: ca.File(), Servers: servers},
		"a client certificate of another CA":    {CAFile: ca.File(), Servers: servers, MutualTLS: true, TLSCert: strangerCert, TLSKey: strangerKey},
		"insecure client without a certificate": {Servers: servers, InsecureSkipTLSVerify: true},
	} {
		c := newClient(t, cfg, nil)
		if _, err := c.ServerKeys(ctx, "b.example"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if b.count() != seen {
		t.Fatal("a request without an acceptable client certificate reached the handler")
	}
}

func TestServerTLSReload(t *testing.T) {
	ca := testca.New(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c1, k1 := ca.Issue(t, "b.example")
	copyPair(t, c1, k1, certFile, keyFile)
	b, reload := serveTLS(t, config.Federation{TLSCert: certFile, TLSKey: keyFile})
	serial := func() *big.Int {
		t.Helper()
		conn, err := tls.Dial("tcp", "127.0.0.1:"+b.port, &tls.Config{RootCAs: ca.Pool(), ServerName: "b.example"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber
	}
	first := serial()

	c2, k2 := ca.Issue(t, "b.example")
	copyPair(t, c2, k2, certFile, keyFile)
	if err := reload(); err != nil {
		t.Fatal(err)
	}
	second := serial()
	if second.Cmp(first) == 0 {
		t.Fatal("reload kept the old certificate")
	}

	if err := os.WriteFile(keyFile, []byte("broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := reload(); err == nil {
		t.Fatal("reload of a broken key returned no error")
	}
	if serial().Cmp(second) != 0 {
		t.Fatal("a broken reload replaced the certificate")
	}

	if _, _, err := ServerTLS(config.Federation{TLSCert: certFile, TLSKey: keyFile}); err == nil {
		t.Fatal("ServerTLS with a broken key")
	}
	if _, _, err := ServerTLS(config.Federation{}); err == nil {
		t.Fatal("ServerTLS without files")
	}
}

func TestClientCertificateReload(t *testing.T) {
	ca := testca.New(t)
	serverCert, serverKey := ca.Issue(t, "b.example")
	b, _ := serveTLS(t, config.Federation{TLSCert: serverCert, TLSKey: serverKey, CAFile: ca.File(), MutualTLS: true})
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c1, k1 := ca.Issue(t, "a.example")
	copyPair(t, c1, k1, certFile, keyFile)
	c := newClient(t, config.Federation{CAFile: ca.File(), Servers: config.Map("b.example=127.0.0.1:" + b.port), MutualTLS: true, TLSCert: certFile, TLSKey: keyFile}, nil)
	ctx := context.Background()
	if _, err := c.ServerKeys(ctx, "b.example"); err != nil {
		t.Fatal(err)
	}
	c2, k2 := ca.Issue(t, "a2.example")
	copyPair(t, c2, k2, certFile, keyFile)
	if err := c.Reload(); err != nil { // drops the idle connection and sessions too
		t.Fatal(err)
	}
	if _, err := c.ServerKeys(ctx, "b.example"); err != nil {
		t.Fatal(err)
	}
	if got := b.last(t); got.clientCN != "a2.example" {
		t.Fatalf("client certificate after reload: %q", got.clientCN)
	}
	if err := os.WriteFile(certFile, []byte("broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(); err == nil {
		t.Fatal("reload of a broken certificate returned no error")
	}
	c.CloseIdleConnections()
	if _, err := c.ServerKeys(ctx, "b.example"); err != nil {
		t.Fatalf("after a broken reload: %v", err)
	}
}

func TestOnSIGHUP(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := make(chan error)
	results := []error{nil, os.ErrNotExist}
	OnSIGHUP(ctx, log, func() error {
		err := results[0]
		results = results[1:]
		calls <- err
		return err
	})
	for range 2 {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		<-calls
	}
	// The log line follows the call; wait for both.
	waitFor(t, func() bool { return len(hook.AllEntries()) == 2 })
	entries := hook.AllEntries()
	if entries[0].Level != logrus.InfoLevel || entries[1].Level != logrus.ErrorLevel || !strings.Contains(entries[1].Message, "old") && !strings.Contains(entries[1].Message, "previous") {
		t.Fatalf("log: %v / %v", entries[0].Message, entries[1].Message)
	}
}

// waitFor polls cond until it holds (the test's own deadline bounds it).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		time.Sleep(time.Millisecond)
	}
}

func TestCappedBody(t *testing.T) {
	for _, tc := range []struct {
		size    int
		tooLong bool
	}{{0, false}, {10, false}, {16, false}, {17, true}, {1000, true}} {
		b := &cappedBody{rc: io.NopCloser(strings.NewReader(strings.Repeat("x", tc.size))), left: 16 + 1}
		got, err := io.ReadAll(b)
		if tc.tooLong {
			if !errors.Is(err, errResponseTooLarge) {
				t.Errorf("%d bytes with a cap of 16: err %v, want errResponseTooLarge", tc.size, err)
			}
			continue
		}
		if err != nil || len(got) != tc.size {
			t.Errorf("%d bytes with a cap of 16: read %d, err %v", tc.size, len(got), err)
		}
	}
}
