package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// certExpiryWarning is how close to its expiry the federation certificate
// must be for a warning at start.
const certExpiryWarning = 14 * 24 * time.Hour

// HostOf returns the host of a server name without its port (and without
// the brackets of an IPv6 literal).
func HostOf(serverName string) string {
	if strings.HasPrefix(serverName, "[") {
		if end := strings.IndexByte(serverName, ']'); end > 0 {
			return serverName[1:end]
		}
		return serverName
	}
	if i := strings.LastIndexByte(serverName, ':'); i >= 0 {
		return serverName[:i]
	}
	return serverName
}

// check finds the problems of the federation section. The names and
// addresses are checked whether or not federation is on; the listener and
// the certificate files only when it is on, and only then is the disk read.
func (f Federation) check(c Config) Problems {
	var ps Problems
	add := func(key, value, why, fix string) {
		ps = append(ps, Problem{Key: "federation." + key, Value: value, Why: why, Fix: fix})
	}
	for _, s := range f.AllowedServers.Items() {
		if !ValidServerName(s) {
			add("allowed_servers", s, "is not a server name (a DNS name or IP address, optionally with :port; no scheme, path or spaces)",
				"list the server names as they appear in user IDs, for example [\"b.example.com\", \"c.example.com:8448\"]")
		}
	}
	seen := map[string]bool{}
	for _, it := range f.Servers.items() {
		switch {
		case !it.ok:
			add("servers", it.raw, "is not an entry `server name: host:port`",
				"write one `b.example.com: 10.0.0.6:8448` per line below servers:; in HAVEN_FEDERATION_SERVERS: b.example.com=10.0.0.6:8448,c.example.com=10.0.0.7:8448")
		case !ValidServerName(it.key):
			add("servers", it.key, "is not a server name (a DNS name or IP address, optionally with :port)",
				"use the server name as it appears in user IDs, for example b.example.com for @alice:b.example.com")
		case !validHostPort(it.value):
			add("servers", it.key+": "+it.value, "the address is not host:port",
				"write the address of the server's federation listener with its port, for example 10.0.0.6:8448, [fd00::6]:8448 or matrix.b.example.com:8448")
		case seen[strings.ToLower(it.key)]:
			add("servers", it.key, "is given more than once", "keep one address per server")
		}
		seen[strings.ToLower(it.key)] = true
	}
	if !f.Enabled {
		return ps
	}
	switch {
	case f.Listen == "":
		add("listen", "", "is empty, but federation is enabled", "set the HTTPS address of the federation listener, for example 0.0.0.0:8448")
	case !validHostPort(f.Listen):
		add("listen", f.Listen, "is not host:port with a port between 1 and 65535", "write an address and port, for example 0.0.0.0:8448")
	case f.Listen == c.Listen:
		add("listen", f.Listen, "is the same address as listen (the client API)", "give federation its own port, for example 0.0.0.0:8448")
	case f.Listen == c.Metrics.Listen:
		add("listen", f.Listen, "is the same address as metrics.listen", "give federation its own port, for example 0.0.0.0:8448")
	}
	why := "is empty, but federation is enabled and serves HTTPS"
	if f.MutualTLS {
		why = "is empty, but federation is enabled and mutual_tls presents this certificate to peers"
	}
	if f.TLSCert == "" {
		add("tls_cert", "", why, "set the PEM file of the federation certificate (with its chain), issued for "+HostOf(c.ServerName))
	}
	if f.TLSKey == "" {
		add("tls_key", "", why, "set the PEM file of the certificate's private key")
	}
	if f.TLSCert != "" && f.TLSKey != "" {
		leaf, probs := readKeyPair(f.TLSCert, f.TLSKey)
		ps = append(ps, probs...)
		if leaf != nil {
			ps = append(ps, f.checkLeaf(leaf, c.ServerName)...)
		}
	}
	if f.CAFile != "" {
		if err := readCAFile(f.CAFile); err != nil {
			add("ca_file", f.CAFile, err.Error(), "give a PEM file of the CA certificates that issue your partners' certificates, or leave it empty for the system's CAs")
		}
	}
	return ps
}

// checkLeaf finds what is wrong with a certificate that loaded.
func (f Federation) checkLeaf(leaf *x509.Certificate, serverName string) Problems {
	var ps Problems
	add := func(why, fix string) {
		ps = append(ps, Problem{Key: "federation.tls_cert", Value: f.TLSCert, Why: why, Fix: fix})
	}
	now := time.Now()
	if now.After(leaf.NotAfter) {
		add("expired on "+leaf.NotAfter.UTC().Format(time.RFC3339)+", so peers refuse it", "renew the certificate; the listener loads the new files on SIGHUP")
	} else if now.Before(leaf.NotBefore) {
		add("is not valid before "+leaf.NotBefore.UTC().Format(time.RFC3339)+", so peers refuse it", "check this machine's clock, or use a certificate that is valid now")
	}
	if host := HostOf(serverName); ValidServerName(serverName) && !delegable(serverName) && leaf.VerifyHostname(host) != nil {
		add(fmt.Sprintf("does not cover %s, the host of server_name (it covers: %s); a server name that is an IP address or has a port cannot be delegated, so every peer checks the certificate against %s", host, certNames(leaf), host),
			"issue a certificate whose subjectAltName includes "+sanOf(host))
	}
	if f.MutualTLS && !allowsClientAuth(leaf) {
		add("does not allow client authentication (its extended key usage lacks clientAuth), and mutual_tls presents it to peers",
			"issue a certificate with extendedKeyUsage serverAuth and clientAuth, or turn mutual_tls off")
	}
	return ps
}

// sanOf writes host as a subjectAltName entry in OpenSSL's notation.
func sanOf(host string) string {
	if net.ParseIP(host) != nil {
		return "IP:" + host
	}
	return "DNS:" + host
}

func allowsClientAuth(leaf *x509.Certificate) bool {
	if len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range leaf.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

func certNames(leaf *x509.Certificate) string {
	var names []string
	names = append(names, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no names"
	}
	return strings.Join(names, ", ")
}

// readKeyPair loads a certificate and its key, returning the leaf
// certificate or the problems.
func readKeyPair(certFile, keyFile string) (*x509.Certificate, Problems) {
	var ps Problems
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		ps = append(ps, Problem{Key: "federation.tls_cert", Value: certFile, Why: "cannot be read: " + errString(err),
			Fix: "give the path of the PEM certificate file, readable by the user running Haven"})
	} else if !hasPEMBlock(certPEM, "CERTIFICATE") {
		ps = append(ps, Problem{Key: "federation.tls_cert", Value: certFile, Why: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
			Fix: "give the certificate file (with its chain), not the key or a DER file; convert DER with `openssl x509 -inform der -in cert.der -out cert.pem`"})
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		ps = append(ps, Problem{Key: "federation.tls_key", Value: keyFile, Why: "cannot be read: " + errString(err),
			Fix: "give the path of the PEM private key file, readable by the user running Haven (and nobody else)"})
	} else if !hasPEMBlock(keyPEM, "PRIVATE KEY") {
		ps = append(ps, Problem{Key: "federation.tls_key", Value: keyFile, Why: "holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)",
			Fix: "give the private key file of the certificate, unencrypted"})
	}
	if len(ps) > 0 {
		return nil, ps
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, Problems{{Key: "federation.tls_key", Value: keyFile, Why: "does not go with federation.tls_cert " + certFile + ": " + err.Error(),
			Fix: "give the private key the certificate was issued for (compare `openssl x509 -pubkey -noout -in CERT` with `openssl pkey -pubout -in KEY`)"}}
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, Problems{{Key: "federation.tls_cert", Value: certFile, Why: "cannot be parsed: " + err.Error(), Fix: "give a valid X.509 certificate in PEM form"}}
		}
	}
	return leaf, nil
}

// hasPEMBlock reports whether data holds a PEM block whose type ends with
// suffix ("CERTIFICATE", "PRIVATE KEY").
func hasPEMBlock(data []byte, suffix string) bool {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if strings.HasSuffix(b.Type, suffix) {
			return true
		}
	}
}

// readCAFile checks that a CA file is readable and holds certificates.
func readCAFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return errors.New("cannot be read: " + errString(err))
	}
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return errors.New("holds a certificate that cannot be parsed: " + err.Error())
		}
		n++
	}
	if n == 0 {
		return errors.New("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
	}
	return nil
}

func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || !validPort(port) || port == "0" || strings.TrimLeft(port, "0123456789") != "" {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return !strings.Contains(host, "%")
	}
	return ValidServerName(host)
}

// delegable reports whether peers may be sent elsewhere for a valid server
// name by /.well-known/matrix/server: only a host name without a port can
// be (an IP literal or an explicit port is connected to as it is).
func delegable(serverName string) bool {
	host := HostOf(serverName)
	return host == serverName && net.ParseIP(host) == nil
}

// warnings are the federation settings that work but deserve a word.
func (f Federation) warnings(c Config) []string {
	if !f.Enabled {
		return nil
	}
	var w []string
	if f.InsecureSkipTLSVerify {
		w = append(w, "federation.insecure_skip_tls_verify is true: peers' certificates are not checked, so anyone on the network path can pose as a partner server (only for test suites)")
	}
	if f.TLSCert != "" && f.TLSKey != "" {
		if leaf, probs := readKeyPair(f.TLSCert, f.TLSKey); len(probs) == 0 {
			if left := time.Until(leaf.NotAfter); left > 0 && left < certExpiryWarning {
				w = append(w, fmt.Sprintf("federation.tls_cert %s expires on %s (in %d days): renew it, then send SIGHUP to load the new files",
					f.TLSCert, leaf.NotAfter.UTC().Format(time.RFC3339), int(left.Hours()/24)))
			}
			// With a port or an IP literal this is a problem (checkLeaf).
			if host := HostOf(c.ServerName); ValidServerName(c.ServerName) && delegable(c.ServerName) && leaf.VerifyHostname(host) != nil {
				w = append(w, fmt.Sprintf("federation.tls_cert %s does not cover %s, the host of server_name (it covers: %s). "+
					"That is fine only when https://%s/.well-known/matrix/server delegates federation to a host the certificate covers: peers that follow it check the certificate against that host. "+
					"Peers that find you by SRV record or port 8448 of %s, or through their federation.servers, check it against %s and refuse it; "+
					"a certificate with both names (subjectAltName %s and the delegated host) suits every peer",
					f.TLSCert, host, certNames(leaf), host, host, host, sanOf(host)))
			}
		}
	}
	return w
}
