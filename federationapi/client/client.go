package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/serverkey"
)

// DefaultTimeout is the limit of one federation request when
// Options.Timeout is zero (joins of large rooms are slow).
const DefaultTimeout = 3 * time.Minute

// Options configure New.
type Options struct {
	// ServerName is our server name, the origin of signed requests.
	ServerName string
	// Key signs the requests.
	Key serverkey.Key
	// Cfg is the federation section of the configuration.
	Cfg config.Federation
	// Log receives the debug lines of discovery; nil: logrus's standard
	// logger.
	Log *logrus.Logger
	// Resolver answers SRV and address lookups; nil: net.DefaultResolver.
	Resolver Resolver
	// Now is the clock of the discovery caches; nil: time.Now.
	Now func() time.Time
	// Timeout limits one request; 0: DefaultTimeout.
	Timeout time.Duration

	// wellKnownPort replaces 443 for /.well-known fetches (tests).
	wellKnownPort string
}

// Client makes signed federation requests. Its embedded
// fclient.FederationClient has the typed calls (SendTransaction, MakeJoin,
// SendJoin, GetEvent, LookupState, ...); all of them go through the
// allowlist, the static map or discovery, the private-address guard and
// the configured TLS.
type Client struct {
	fclient.FederationClient
	tr *transport
}

// New builds a Client. It reads ca_file, and with mutual_tls tls_cert and
// tls_key; nothing is sent until a request is made.
func New(opts Options) (*Client, error) {
	if !config.ValidServerName(opts.ServerName) {
		return nil, fmt.Errorf("federation client: %q is not a server name", opts.ServerName)
	}
	if len(opts.Key.Private) != ed25519.PrivateKeySize || opts.Key.ID == "" {
		return nil, errors.New("federation client: no signing key")
	}
	cfg := opts.Cfg
	log := opts.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	dns := opts.Resolver
	if dns == nil {
		dns = net.DefaultResolver
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	roots, err := caPool(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("federation client: %w", err)
	}
	t := &transport{
		allowed:      map[string]bool{},
		named:        map[string]bool{},
		allowPrivate: cfg.AllowPrivateAddresses,
		skipVerify:   cfg.InsecureSkipTLSVerify,
		roots:        roots,
		sessions:     newSessionCache(),
		dns:          dns,
		now:          now,
		pool:         map[poolKey]*pooled{},
	}
	if cfg.MutualTLS {
		if t.clientCert, err = newKeyPair(cfg.TLSCert, cfg.TLSKey); err != nil {
			return nil, fmt.Errorf("federation client: mutual_tls: %w", err)
		}
	}
	for _, s := range cfg.AllowedServers.Items() {
		t.allowed[strings.ToLower(s)] = true
		t.named[strings.ToLower(s)] = true
	}
	static := map[string]string{}
	for name, addr := range cfg.Servers.Entries() {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("federation client: federation.servers: %s: %q is not host:port", name, addr)
		}
		static[strings.ToLower(name)] = addr
		t.named[strings.ToLower(name)] = true
	}
	t.res = &resolver{
		dns:           dns,
		now:           now,
		log:           log,
		static:        static,
		httpClient:    t.wellKnownClient,
		wellKnownPort: opts.wellKnownPort,
		wellKnown:     map[string]wellKnownEntry{},
		routes:        map[string]routeEntry{},
	}
	fed := fclient.NewFederationClient(
		[]*fclient.SigningIdentity{{ServerName: spec.ServerName(opts.ServerName), KeyID: opts.Key.ID, PrivateKey: opts.Key.Private}},
		fclient.WithTransport(t),
		fclient.WithTimeout(timeout),
		fclient.WithUserAgent("Haven"),
	)
	return &Client{FederationClient: fed, tr: t}, nil
}

// Fed returns the typed federation client (the same as the embedded one).
func (c *Client) Fed() fclient.FederationClient { return c.FederationClient }

// ServerKeys fetches a server's own keys with GET /_matrix/key/v2/server
// on the server itself. The answer is not verified here.
func (c *Client) ServerKeys(ctx context.Context, server string) (gomatrixserverlib.ServerKeys, error) {
	keys, err := c.FederationClient.GetServerKeys(ctx, spec.ServerName(server))
	if err != nil {
		return gomatrixserverlib.ServerKeys{}, fmt.Errorf("fetch the keys of %s: %w", server, err)
	}
	return keys, nil
}

// Resolve returns where requests for server would go now (after the
// allowlist; for diagnostics such as an admin's "why can't we reach X").
func (c *Client) Resolve(ctx context.Context, server string) (Route, error) {
	if err := c.tr.permitted(server); err != nil {
		return Route{}, err
	}
	return c.tr.res.resolve(ctx, server, c.tr.mayPrivate(server))
}

// RoundTripper is the transport itself, for requests fclient has no call
// for; its URLs are matrix://<server name>/path.
func (c *Client) RoundTripper() http.RoundTripper { return c.tr }

// Reload reads the client certificate of mutual_tls again (call it on
// SIGHUP with the listener's reload); idle connections and TLS sessions,
// which carry the old one, are dropped. With broken files the old
// certificate stays in use and the error is returned.
func (c *Client) Reload() error {
	if c.tr.clientCert == nil {
		return nil
	}
	if err := c.tr.clientCert.reload(); err != nil {
		return err
	}
	c.tr.sessions.reset()
	c.tr.closeIdle()
	return nil
}

// CloseIdleConnections closes the idle connections to every peer.
func (c *Client) CloseIdleConnections() { c.tr.closeIdle() }
