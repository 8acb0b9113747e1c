package oauth

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/haven-chat/haven/storage"
)

// Limits of a registration.
const (
	MaxRegistrationBytes = 16 << 10
	maxRedirectURIs      = 10
	maxURIBytes          = 2048
	maxClientNameRunes   = 200
)

// Client is a registered client: its ID and the metadata Haven kept (RFC
// 7591; values Haven does not use, such as contacts or localised names,
// are dropped).
type Client struct {
	ID                      string   `json:"client_id"`
	ApplicationType         string   `json:"application_type"`
	ClientName              string   `json:"client_name,omitempty"`
	ClientURI               string   `json:"client_uri"`
	LogoURI                 string   `json:"logo_uri,omitempty"`
	TOSURI                  string   `json:"tos_uri,omitempty"`
	PolicyURI               string   `json:"policy_uri,omitempty"`
	RedirectURIs            []string `json:"redirect_uris"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	IssuedAt                int64    `json:"client_id_issued_at"`
}

// Name is what the consent page calls the client: its name, else the host
// of its client_uri.
func (c Client) Name() string {
	if c.ClientName != "" {
		return c.ClientName
	}
	if u, err := url.Parse(c.ClientURI); err == nil {
		return u.Host
	}
	return c.ID
}

// registration is the request body of POST /registration.
type registration struct {
	ApplicationType         *string  `json:"application_type"`
	ClientName              *string  `json:"client_name"`
	ClientURI               *string  `json:"client_uri"`
	LogoURI                 *string  `json:"logo_uri"`
	TOSURI                  *string  `json:"tos_uri"`
	PolicyURI               *string  `json:"policy_uri"`
	RedirectURIs            []string `json:"redirect_uris"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	TokenEndpointAuthMethod *string  `json:"token_endpoint_auth_method"`
}

func metaErr(format string, args ...any) *Error {
	return oauthErr(ErrInvalidClientMetadata, format, args...)
}

// Register checks a registration request (a JSON object) and keeps the
// client. Bad metadata is invalid_client_metadata, a bad redirect URI
// invalid_redirect_uri.
func (s *Service) Register(ctx context.Context, body []byte) (Client, error) {
	c, err := checkRegistration(body)
	if err != nil {
		return Client{}, err
	}
	if c.ID, err = randomID(); err != nil {
		return Client{}, err
	}
	c.IssuedAt = s.now().Unix()
	raw, err := json.Marshal(c)
	if err != nil {
		return Client{}, fmt.Errorf("encode client: %w", err)
	}
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO oauth_clients (client_id, metadata, created_ts) VALUES ($1, $2, $3)`, c.ID, string(raw), s.now().UnixMilli())
		return err
	})
	if err != nil {
		return Client{}, fmt.Errorf("insert oauth client: %w", err)
	}
	return c, nil
}

// Client returns a registered client; ok is false for an unknown ID.
func (s *Service) Client(ctx context.Context, clientID string) (Client, bool, error) {
	if clientID == "" || len(clientID) > 64 || !storage.StorableText(clientID) {
		return Client{}, false, nil
	}
	var raw string
	err := s.db.QueryRow(ctx, `SELECT metadata FROM oauth_clients WHERE client_id = $1`, clientID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return Client{}, false, nil
	}
	if err != nil {
		return Client{}, false, fmt.Errorf("select oauth client %s: %w", clientID, err)
	}
	var c Client
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return Client{}, false, fmt.Errorf("decode oauth client %s: %w", clientID, err)
	}
	return c, true, nil
}

func checkRegistration(body []byte) (Client, error) {
	if len(body) > MaxRegistrationBytes {
		return Client{}, metaErr("The registration is larger than %d bytes", MaxRegistrationBytes)
	}
	if !utf8.Valid(body) || bytes.IndexByte(body, 0) >= 0 {
		return Client{}, metaErr("The registration is not UTF-8 text")
	}
	var req registration
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		return Client{}, metaErr("The registration is not a JSON object of client metadata: %v", err)
	}
	if dec.More() {
		return Client{}, metaErr("The registration has data after the JSON object")
	}
	c := Client{ApplicationType: "web", TokenEndpointAuthMethod: "none"}
	if req.ApplicationType != nil {
		c.ApplicationType = *req.ApplicationType
	}
	if c.ApplicationType != "web" && c.ApplicationType != "native" {
		return Client{}, metaErr("application_type must be web or native")
	}
	if req.TokenEndpointAuthMethod != nil && *req.TokenEndpointAuthMethod != "none" {
		return Client{}, metaErr("Only public clients are supported: token_endpoint_auth_method must be none")
	}
	if req.ClientURI == nil || *req.ClientURI == "" {
		return Client{}, metaErr("client_uri is required")
	}
	cu, err := checkClientURI(*req.ClientURI)
	if err != nil {
		return Client{}, err
	}
	c.ClientURI = *req.ClientURI
	if req.ClientName != nil {
		name := strings.TrimSpace(*req.ClientName)
		if utf8.RuneCountInString(name) > maxClientNameRunes || !storage.StorableText(name) {
			return Client{}, metaErr("client_name is longer than %d characters", maxClientNameRunes)
		}
		c.ClientName = name
	}
	// The URIs of the client's pages must be on its own site; one that is
	// not is dropped rather than shown to the user.
	for _, f := range []struct {
		in  *string
		out *string
	}{{req.LogoURI, &c.LogoURI}, {req.TOSURI, &c.TOSURI}, {req.PolicyURI, &c.PolicyURI}} {
		if f.in != nil && sameSite(*f.in, cu) {
			*f.out = *f.in
		}
	}
	// Grant types Haven does not have (the device code grant, say) are left
	// out of the registration, as RFC 7591 allows.
	c.GrantTypes = []string{"authorization_code"}
	if req.GrantTypes != nil {
		c.GrantTypes = nil
		for _, g := range req.GrantTypes {
			if (g == "authorization_code" || g == "refresh_token") && !slices.Contains(c.GrantTypes, g) {
				c.GrantTypes = append(c.GrantTypes, g)
			}
		}
		if !slices.Contains(c.GrantTypes, "authorization_code") {
			return Client{}, metaErr("grant_types must include authorization_code, the only grant that starts a session here")
		}
	}
	c.ResponseTypes = []string{"code"}
	if req.ResponseTypes != nil && !slices.Equal(req.ResponseTypes, []string{"code"}) {
		return Client{}, metaErr("response_types must be [\"code\"]")
	}
	if len(req.RedirectURIs) == 0 {
		return Client{}, oauthErr(ErrInvalidRedirectURI, "redirect_uris is required for the authorization code grant")
	}
	if len(req.RedirectURIs) > maxRedirectURIs {
		return Client{}, oauthErr(ErrInvalidRedirectURI, "At most %d redirect_uris", maxRedirectURIs)
	}
	for _, r := range req.RedirectURIs {
		if err := checkRedirectURI(r, c.ApplicationType, cu); err != nil {
			return Client{}, err
		}
	}
	c.RedirectURIs = req.RedirectURIs
	return c, nil
}

// checkClientURI: https (or http on a loopback host, for development), an
// absolute URL with a host and no user name or password.
func checkClientURI(raw string) (*url.URL, error) {
	if len(raw) > maxURIBytes {
		return nil, metaErr("client_uri is too long")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Opaque != "" {
		return nil, metaErr("client_uri must be an absolute https URL without a user name or password")
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && loopbackHost(u.Hostname())) {
		return nil, metaErr("client_uri must use https (http only on localhost)")
	}
	return u, nil
}

// loopbackHost tells whether a host name is the loopback interface.
func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// hostWithin tells whether host is base or one of its subdomains.
func hostWithin(host, base string) bool {
	host, base = strings.ToLower(host), strings.ToLower(base)
	return host != "" && (host == base || strings.HasSuffix(host, "."+base))
}

// sameSite tells whether raw is a URL of the client's own site: the
// client_uri's scheme, and its host or a subdomain.
func sameSite(raw string, client *url.URL) bool {
	if len(raw) > maxURIBytes {
		return false
	}
	u, err := url.Parse(raw)
	return err == nil && u.User == nil && u.Scheme == client.Scheme && hostWithin(u.Hostname(), client.Hostname())
}

// checkRedirectURI applies the spec's rules. A web client redirects to
// https URLs on the host of its client_uri or a subdomain. A native client
// may also use http on a loopback address (any port) or a private-use
// scheme in reverse-DNS notation of its client_uri's domain
// (com.example.app:/callback for https://example.com or
// https://app.example.com). No fragment, no user name or password.
func checkRedirectURI(raw, appType string, client *url.URL) error {
	bad := func(why string) error {
		return oauthErr(ErrInvalidRedirectURI, "redirect_uri %q %s", truncate(raw, 200), why)
	}
	if len(raw) > maxURIBytes || !storage.StorableText(raw) {
		return bad("is too long")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return bad("is not an absolute URI")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return bad("has a fragment")
	}
	if u.User != nil {
		return bad("carries a user name or password")
	}
	switch u.Scheme {
	case "https":
		if !hostWithin(u.Hostname(), client.Hostname()) {
			return bad("is not on the host of client_uri or a subdomain of it")
		}
	case "http":
		if !loopbackHost(u.Hostname()) {
			return bad("uses http on a host other than localhost, 127.0.0.1 or [::1]")
		}
		if appType != "native" && !(client.Scheme == "http" && strings.EqualFold(u.Hostname(), client.Hostname())) {
			return bad("is a loopback address, which only native clients may use")
		}
	default:
		if appType != "native" {
			return bad("uses a private-use scheme, which only native clients may use")
		}
		if u.Host != "" || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
			return bad("must have the form scheme:/path (no authority)")
		}
		if !strings.Contains(u.Scheme, ".") {
			return bad("has a scheme that is not in reverse-DNS notation")
		}
		labels := strings.Split(u.Scheme, ".")
		slices.Reverse(labels)
		dom := strings.Join(labels, ".")
		if !hostWithin(dom, client.Hostname()) && !hostWithin(client.Hostname(), dom) {
			return bad("has a scheme that is not the reversed domain of client_uri")
		}
	}
	return nil
}

// RedirectAllowed tells whether redirectURI is one of the client's:
// exactly, or, for a loopback http URI, with any port (RFC 8252 7.3).
func (c Client) RedirectAllowed(redirectURI string) bool {
	if slices.Contains(c.RedirectURIs, redirectURI) {
		return true
	}
	u, err := url.Parse(redirectURI)
	if err != nil || u.Scheme != "http" || !loopbackHost(u.Hostname()) || u.Fragment != "" || u.User != nil {
		return false
	}
	for _, reg := range c.RedirectURIs {
		r, err := url.Parse(reg)
		if err != nil || r.Scheme != "http" || !loopbackHost(r.Hostname()) {
			continue
		}
		if r.Hostname() == u.Hostname() && r.EscapedPath() == u.EscapedPath() && r.RawQuery == u.RawQuery {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
