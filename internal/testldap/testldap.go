// Package testldap starts a real OpenLDAP server (Debian's slapd) for
// tests: its own configuration and mdb database in the test's temporary
// folder, listening on a loopback port (ldap:// with StartTLS offered, and
// ldaps://), with a service account and the people the test asks for. The
// test is skipped when slapd is not installed (scripts/test.sh installs
// it). Nothing here is for production use.
package testldap

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/testca"
)

// Base is the suffix of the test directory; people are under ou=people.
const (
	Base        = "dc=example,dc=com"
	People      = "ou=people," + Base
	ServiceDN   = "cn=haven,ou=services," + Base
	ServicePass = "service secret 1"
)

// Person is one entry of the test directory (objectClass inetOrgPerson).
type Person struct {
	UID, CN, Mail, Password string
}

// Server is a running slapd.
type Server struct {
	// URL is ldap://127.0.0.1:PORT (StartTLS offered), TLSURL the
	// ldaps:// one; CA trusts the server's certificate (for "localhost"
	// and 127.0.0.1).
	URL, TLSURL string
	CA          *testca.CA
	cmd         *exec.Cmd
	done        chan struct{}
}

func find(t testing.TB, name string) string {
	for _, p := range []string{"/usr/sbin/" + name, "/usr/bin/" + name} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Skipf("%s is not installed (Debian: apt-get install slapd ldap-utils); the LDAP tests need a real OpenLDAP", name)
	return ""
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// Start runs slapd with the service account and people; it is stopped at
// the end of the test.
func Start(t testing.TB, people ...Person) *Server {
	t.Helper()
	slapd := find(t, "slapd")
	slapadd := find(t, "slapadd")
	schema := "/etc/ldap/schema"
	if _, err := os.Stat(filepath.Join(schema, "inetorgperson.schema")); err != nil {
		t.Skipf("OpenLDAP's schema files are not in %s", schema)
	}
	modules := "/usr/lib/ldap"
	dir := t.TempDir()
	ca := testca.New(t)
	cert, key := ca.Issue(t, "localhost", "127.0.0.1")
	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	for _, s := range []string{"core", "cosine", "inetorgperson"} {
		fmt.Fprintf(&conf, "include %s/%s.schema\n", schema, s)
	}
	if _, err := os.Stat(filepath.Join(modules, "back_mdb.so")); err == nil {
		fmt.Fprintf(&conf, "modulepath %s\nmoduleload back_mdb\n", modules)
	}
	fmt.Fprintf(&conf, `pidfile %[1]s/slapd.pid
TLSCACertificateFile %[2]s
TLSCertificateFile %[3]s
TLSCertificateKeyFile %[4]s
database mdb
maxsize 10485760
suffix "%[5]s"
rootdn "cn=admin,%[5]s"
rootpw "admin secret"
directory %[1]s/db
access to attrs=userPassword by self =xw by anonymous auth by * none
access to * by users read by * none
`, dir, ca.File(), cert, key, Base)
	confFile := filepath.Join(dir, "slapd.conf")
	write(t, confFile, conf.String())

	var ldif strings.Builder
	fmt.Fprintf(&ldif, "dn: %s\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n", Base)
	fmt.Fprintf(&ldif, "dn: ou=people,%s\nobjectClass: organizationalUnit\nou: people\n\n", Base)
	fmt.Fprintf(&ldif, "dn: ou=services,%s\nobjectClass: organizationalUnit\nou: services\n\n", Base)
	fmt.Fprintf(&ldif, "dn: %s\nobjectClass: person\ncn: haven\nsn: haven\nuserPassword: %s\n\n", ServiceDN, hashPassword(t, ServicePass))
	for _, p := range people {
		fmt.Fprintf(&ldif, "dn: uid=%s,%s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\n", p.UID, People, p.UID, p.CN, p.CN)
		if p.Mail != "" {
			fmt.Fprintf(&ldif, "mail: %s\n", p.Mail)
		}
		if p.Password != "" {
			fmt.Fprintf(&ldif, "userPassword: %s\n", hashPassword(t, p.Password))
		}
		ldif.WriteString("\n")
	}
	ldifFile := filepath.Join(dir, "data.ldif")
	write(t, ldifFile, ldif.String())
	if out, err := exec.Command(slapadd, "-f", confFile, "-l", ldifFile).CombinedOutput(); err != nil {
		t.Fatalf("slapadd: %v\n%s", err, out)
	}

	port, tlsPort := freePort(t), freePort(t)
	s := &Server{URL: "ldap://127.0.0.1:" + port, TLSURL: "ldaps://127.0.0.1:" + tlsPort, CA: ca, done: make(chan struct{})}
	// -d 0: stay in the foreground (so the test owns the process), no debug output.
	s.cmd = exec.Command(slapd, "-f", confFile, "-h", s.URL+"/ "+"ldaps://127.0.0.1:"+tlsPort+"/", "-d", "0")
	logFile, err := os.Create(filepath.Join(dir, "slapd.log"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start slapd: %v", err)
	}
	go func() { _ = s.cmd.Wait(); logFile.Close(); close(s.done) }()
	t.Cleanup(s.Stop)
	for _, addr := range []string{"127.0.0.1:" + port, "127.0.0.1:" + tlsPort} {
		waitListening(t, s, addr, filepath.Join(dir, "slapd.log"))
	}
	return s
}

// waitListening polls until slapd accepts connections on addr.
func waitListening(t testing.TB, s *Server, addr, log string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-s.done:
			b, _ := os.ReadFile(log)
			t.Fatalf("slapd exited before listening on %s:\n%s", addr, b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log)
			t.Fatalf("slapd is not listening on %s:\n%s", addr, b)
		}
	}
}

// Stop ends slapd (the directory is then unreachable at its URLs).
func (s *Server) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// hashPassword hashes with OpenLDAP's slappasswd ({SSHA}).
func hashPassword(t testing.TB, pw string) string {
	t.Helper()
	out, err := exec.Command(find(t, "slappasswd"), "-s", pw).Output()
	if err != nil {
		t.Fatalf("slappasswd: %v", err)
	}
	return strings.TrimSpace(string(out))
}
