package loadtest

// The two sites of `haven loadtest-federation`: two Haven processes started
// from a haven binary on loopback, each with its own data folder (SQLite),
// client listener, metrics listener and federation listener, federating
// over mutual TLS with certificates of a throwaway CA written for the run.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// fedSite is one Haven process of a two-site run.
type fedSite struct {
	label      string // "A" or "B"
	name       string // server name: localhost:<federation port>
	dir        string
	clientURL  string
	metricsURL string
	env        []string
	logPath    string

	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File

	c *mxClient
}

// fedTLS is the run's CA and the one certificate both sites use (for
// "localhost" and 127.0.0.1).
type fedTLS struct {
	caFile, certFile, keyFile string
}

// freePort asks the kernel for a loopback port that is free now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeFedTLS writes a CA certificate and a certificate with its key for
// localhost, signed by the CA, as PEM files into dir.
func writeFedTLS(dir string) (fedTLS, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fedTLS{}, fmt.Errorf("CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "haven loadtest-federation CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fedTLS{}, fmt.Errorf("CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fedTLS{}, fmt.Errorf("CA certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fedTLS{}, fmt.Errorf("key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano() + 1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return fedTLS{}, fmt.Errorf("certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fedTLS{}, fmt.Errorf("key: %w", err)
	}
	t := fedTLS{caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{t.caFile, "CERTIFICATE", caDER}, {t.certFile, "CERTIFICATE", der}, {t.keyFile, "EC PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return fedTLS{}, fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return t, nil
}

// newFedSites prepares (does not start) sites A and B under dir.
func newFedSites(dir, secret string, extraEnv []string) (*fedSite, *fedSite, error) {
	tlsFiles, err := writeFedTLS(dir)
	if err != nil {
		return nil, nil, err
	}
	var ports [6]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, nil, err
		}
	}
	a := &fedSite{label: "A", name: fmt.Sprintf("localhost:%d", ports[0])}
	b := &fedSite{label: "B", name: fmt.Sprintf("localhost:%d", ports[1])}
	// Every HAVEN_* variable of our environment is left out: the server
	// refuses unknown ones, and the run's settings must be exactly these.
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HAVEN_") {
			base = append(base, kv)
		}
	}
	for i, s := range []*fedSite{a, b} {
		fedPort, clientPort, metricsPort := ports[i], ports[2+2*i], ports[3+2*i]
		s.dir = filepath.Join(dir, "site-"+strings.ToLower(s.label))
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("site %s folder: %w", s.label, err)
		}
		s.clientURL = fmt.Sprintf("http://127.0.0.1:%d", clientPort)
		s.metricsURL = fmt.Sprintf("http://127.0.0.1:%d", metricsPort)
		s.logPath = filepath.Join(dir, "site-"+strings.ToLower(s.label)+".log")
		s.env = append(append([]string(nil), base...),
			"HAVEN_DATA_DIR="+filepath.Join(s.dir, "data"),
			fmt.Sprintf("HAVEN_LISTEN=127.0.0.1:%d", clientPort),
			fmt.Sprintf("HAVEN_METRICS_LISTEN=127.0.0.1:%d", metricsPort),
			"HAVEN_RATE_LIMITS_ENABLED=false",
			"HAVEN_PASSWORD_HASH_COST=4",
			"HAVEN_REGISTRATION_SHARED_SECRET="+secret,
			"HAVEN_LOGGING_LEVEL=warn",
			"HAVEN_SERVER_NAME="+s.name,
			"HAVEN_FEDERATION_ENABLED=true",
			fmt.Sprintf("HAVEN_FEDERATION_LISTEN=127.0.0.1:%d", fedPort),
			"HAVEN_FEDERATION_TLS_CERT="+tlsFiles.certFile,
			"HAVEN_FEDERATION_TLS_KEY="+tlsFiles.keyFile,
			"HAVEN_FEDERATION_CA_FILE="+tlsFiles.caFile,
			"HAVEN_FEDERATION_ALLOWED_SERVERS="+a.name+","+b.name,
		)
		s.env = append(s.env, extraEnv...)
		s.c = newMXClient(s.clientURL, 4096)
	}
	return a, b, nil
}

// start starts the site's process and waits until /health answers. It
// returns when the process was started and when it answered.
func (s *fedSite) start(ctx context.Context, bin string) (started, healthy time.Time, err error) {
	if s.cmd != nil {
		return started, healthy, fmt.Errorf("site %s runs already", s.label)
	}
	if s.log, err = os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return started, healthy, fmt.Errorf("site %s log: %w", s.label, err)
	}
	cmd := exec.Command(bin, "serve")
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = s.dir, s.env, s.log, s.log
	started = time.Now()
	if err := cmd.Start(); err != nil {
		s.log.Close()
		return started, healthy, fmt.Errorf("start site %s: %w", s.label, err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-s.done:
			s.cmd = nil
			return started, healthy, fmt.Errorf("site %s exited at start; see %s", s.label, s.logPath)
		default:
		}
		if resp, err := hc.Get(s.clientURL + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return started, time.Now(), nil
			}
		}
		sleepCtx(ctx, 10*time.Millisecond)
	}
	s.stop()
	return started, healthy, fmt.Errorf("site %s did not answer /health; see %s", s.label, s.logPath)
}

// stop ends the process with SIGTERM (SIGKILL after 30 s) and waits for it.
func (s *fedSite) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
	s.c.close()
	if s.log != nil {
		s.log.Close()
		s.log = nil
	}
}

// probe reads the running process's CPU and memory (/proc) and metrics.
func (s *fedSite) probe() *ltProbe {
	pid := 0
	if s.cmd != nil {
		pid = s.cmd.Process.Pid
	}
	return newProbe(s.metricsURL, pid)
}

// metric reads one metric of the site (summed over its label sets).
func (s *fedSite) metric(ctx context.Context, name string) (float64, bool) {
	if s.cmd == nil {
		return 0, false
	}
	p := s.probe()
	req, err := http.NewRequestWithContext(ctx, "GET", p.metricsURL, nil)
	if err != nil {
		return 0, false
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, false
	}
	v, ok := parseMetrics(body, name)[name]
	return v, ok
}
