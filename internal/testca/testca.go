// Package testca is a throwaway certificate authority for tests: it issues
// ECDSA P-256 certificates for names and writes them as PEM files into the
// test's temporary folder. Nothing here is for production use.
package testca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// Validity is how long certificates from Issue stay valid: long enough
// that no expiry warning fires during a test, short enough to be useless
// outside one.
const Validity = 30 * 24 * time.Hour

// CA is a certificate authority that lives as long as its test.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
	pool *x509.CertPool
	n    atomic.Int64
}

// New makes a CA and writes its certificate to a PEM file (see File).
func New(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testca: generate CA key: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "Haven test CA " + strconv.FormatInt(now.UnixNano(), 36), Organization: []string{"Haven tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(Validity + 24*time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testca: create CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testca: parse CA certificate: %v", err)
	}
	ca := &CA{cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	ca.file = filepath.Join(t.TempDir(), "ca.pem")
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// File is the path of the CA certificate's PEM file.
func (ca *CA) File() string { return ca.file }

// Pool is a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// Certificate is the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Issue makes a certificate for the names, valid for Validity from now,
// for both server and client authentication, and writes it and its key as
// PEM files. A name that is an IP address becomes an IP SAN, any other a
// DNS SAN; "localhost" gets DNS localhost and IP 127.0.0.1.
func (ca *CA) Issue(t testing.TB, names ...string) (certFile, keyFile string) {
	t.Helper()
	now := time.Now()
	return ca.IssueValid(t, now.Add(-time.Hour), now.Add(Validity), names...)
}

// IssueValid is Issue with the validity period given, for tests of expired
// or soon expiring certificates.
func (ca *CA) IssueValid(t testing.TB, notBefore, notAfter time.Time, names ...string) (certFile, keyFile string) {
	t.Helper()
	if len(names) == 0 {
		t.Fatal("testca: Issue needs at least one name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testca: generate key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		tmpl.DNSNames = append(tmpl.DNSNames, n)
		if n == "localhost" {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IPv4(127, 0, 0, 1))
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testca: create certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testca: marshal key: %v", err)
	}
	dir := t.TempDir()
	n := strconv.FormatInt(ca.n.Add(1), 10)
	certFile = filepath.Join(dir, "cert"+n+".pem")
	keyFile = filepath.Join(dir, "key"+n+".pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testca: serial number: %v", err)
	}
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("testca: write %s: %v", path, err)
	}
}
