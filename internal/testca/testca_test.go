package testca

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
)

func TestIssue(t *testing.T) {
	ca := New(t)
	for _, tc := range []struct {
		names  []string
		verify []string
		refuse []string
	}{
		{names: []string{"localhost"}, verify: []string{"localhost", "127.0.0.1"}, refuse: []string{"example.com", "::1"}},
		{names: []string{"a.example", "10.0.0.5"}, verify: []string{"a.example", "10.0.0.5"}, refuse: []string{"b.example", "127.0.0.1"}},
		{names: []string{"::1"}, verify: []string{"::1"}, refuse: []string{"localhost"}},
	} {
		certFile, keyFile := ca.Issue(t, tc.names...)
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatalf("%v: %v", tc.names, err)
		}
		leaf := pair.Leaf
		for _, name := range tc.verify {
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("%v: %s refused: %v", tc.names, name, err)
			}
		}
		for _, name := range tc.refuse {
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool()}); err == nil {
				t.Errorf("%v: %s accepted", tc.names, name)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: tc.verify[0], Roots: New(t).Pool()}); err == nil {
			t.Errorf("%v: verified against another CA", tc.names)
		}
	}
	data, err := os.ReadFile(ca.File())
	if err != nil {
		t.Fatal(err)
	}
	if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(data) {
		t.Fatal("CA file holds no certificate")
	}
}
