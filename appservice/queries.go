package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
)

// Queries asks the services what only they know, at once: whether an
// unknown user or alias of theirs exists, the third-party lookups, and the
// ping. It needs nothing but the registrations and HTTP, so that the user
// API and the roomserver can use it before anything else of this package
// runs.
type Queries struct {
	reg        *Registry
	serverName string
	client     *http.Client
	timeout    time.Duration
}

// QueryOptions tune the queries.
type QueryOptions struct {
	ServerName string
	// Timeout bounds one request to a service (default 10s; the ping's
	// M_CONNECTION_TIMEOUT comes from it).
	Timeout time.Duration
	// HTTPClient, if set, is used to reach the services (tests).
	HTTPClient *http.Client
}

// NewQueries prepares the queries of the registered services.
func NewQueries(reg *Registry, opts QueryOptions) *Queries {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	c := opts.HTTPClient
	if c == nil {
		c = &http.Client{}
	}
	return &Queries{reg: reg, serverName: opts.ServerName, client: c, timeout: opts.Timeout}
}

// Registry is the set of services the queries ask.
func (q *Queries) Registry() *Registry { return q.reg }

// ExclusiveUserOwner returns the ID of the service that holds the user ID
// in an exclusive namespace, or "" (userapi.AppServices).
func (q *Queries) ExclusiveUserOwner(userID string) string { return q.reg.ExclusiveUserOwner(userID) }

// MayCreateAlias refuses an alias in a service's exclusive namespace unless
// the user is that service's: its sender or a user of its namespaces
// (roomserver.AliasNamespaces).
func (q *Queries) MayCreateAlias(userID, alias string) error {
	if r := q.reg.exclusiveAliasOwner(alias); r != nil && !r.ControlsUser(userID) {
		return merr.Exclusive("The alias %s is reserved by an application service", alias)
	}
	return nil
}

// QueryUser asks the services with a local user ID in a namespace whether
// the user exists (GET /_matrix/app/v1/users/{userId}); true when one
// answers 200, which means it has created the user.
func (q *Queries) QueryUser(ctx context.Context, userID string) bool {
	if ids.ServerOf(userID, '@') != q.serverName {
		return false
	}
	for _, r := range q.reg.usersServices(userID) {
		if q.exists(ctx, r, "/_matrix/app/v1/users/"+url.PathEscape(userID), "user_id", userID) {
			return true
		}
	}
	return false
}

// QueryAlias asks the services with a local alias in a namespace whether it
// exists (GET /_matrix/app/v1/rooms/{roomAlias}); true when one answers
// 200, which means it has created the room and the alias.
func (q *Queries) QueryAlias(ctx context.Context, alias string) bool {
	if ids.ServerOf(alias, '#') != q.serverName {
		return false
	}
	for _, r := range q.reg.regs {
		if r.InAliasNamespace(alias) && q.exists(ctx, r, "/_matrix/app/v1/rooms/"+url.PathEscape(alias), "alias", alias) {
			return true
		}
	}
	return false
}

func (q *Queries) exists(ctx context.Context, r *Registration, path, field, value string) bool {
	if r.URL == "" {
		return false
	}
	status, _, err := q.do(ctx, r, http.MethodGet, path, nil)
	if err != nil {
		logging.From(ctx).WithError(err).WithFields(logrus.Fields{"appservice": r.ID, field: value}).Warn("appservice: query failed")
		return false
	}
	return status == http.StatusOK
}

// do sends one request to a service with its hs_token and returns the
// status and (at most 1 MiB of) the body.
func (q *Queries) do(ctx context.Context, r *Registration, method, pathAndQuery string, body any) (int, []byte, error) {
	return request(ctx, q.client, q.timeout, r, method, pathAndQuery, body)
}

func request(ctx context.Context, client *http.Client, timeout time.Duration, r *Registration, method, pathAndQuery string, body any) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.URL+pathAndQuery, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.HSToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, raw, err
}

// Ping calls POST /_matrix/app/v1/ping on the service whose token made the
// request (POST /_matrix/client/v1/appservice/{appserviceId}/ping) and
// returns how long it took. The errors are the spec's: M_FORBIDDEN for
// another service's ID, M_URL_NOT_SET, M_CONNECTION_TIMEOUT,
// M_CONNECTION_FAILED and M_BAD_STATUS (with the service's status and body).
func (q *Queries) Ping(ctx context.Context, callerID, serviceID, txnID string) (time.Duration, error) {
	r := q.reg.ByID(serviceID)
	if r == nil || callerID != serviceID {
		return 0, merr.Forbidden("This token is not the application service %s's", serviceID)
	}
	if r.URL == "" {
		return 0, merr.Custom(http.StatusBadRequest, "M_URL_NOT_SET", "The application service %s has no URL", serviceID)
	}
	body := map[string]string{}
	if txnID != "" {
		body["transaction_id"] = txnID
	}
	start := time.Now()
	status, raw, err := q.do(ctx, r, http.MethodPost, "/_matrix/app/v1/ping", body)
	took := time.Since(start)
	var ne net.Error
	switch {
	case err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()):
		return 0, merr.Custom(http.StatusGatewayTimeout, "M_CONNECTION_TIMEOUT", "The application service did not answer within %s", q.timeout).FromUpstream()
	case err != nil:
		return 0, merr.Custom(http.StatusBadGateway, "M_CONNECTION_FAILED", "Cannot reach the application service: %s", connReason(err)).FromUpstream()
	case status/100 != 2:
		return 0, merr.Custom(http.StatusBadGateway, "M_BAD_STATUS", "The application service answered %d", status).FromUpstream().
			With("status", status).With("body", string(raw))
	}
	return took, nil
}

// connReason is a connection error without the URL (which may carry a
// path the operator considers private).
func connReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// Third-party lookups (the Client-Server API's /thirdparty endpoints),
// forwarded to the services that bridge the protocol and merged.

// Protocols gathers the protocols of every service that declares some:
// each service's answer to GET /_matrix/app/v1/thirdparty/protocol/{p};
// when several bridge one protocol, the first answer is kept and the
// instances of the others are added to it.
func (q *Queries) Protocols(ctx context.Context) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	for _, r := range q.reg.regs {
		for _, p := range r.Protocols {
			out[p] = q.mergeProtocol(out[p], q.protocolOf(ctx, r, p))
		}
	}
	for p, v := range out {
		if v == nil {
			delete(out, p)
		}
	}
	return out, nil
}

// Protocol is one protocol's metadata, or M_NOT_FOUND.
func (q *Queries) Protocol(ctx context.Context, protocol string) (json.RawMessage, error) {
	var merged json.RawMessage
	for _, r := range q.reg.regs {
		if r.HasProtocol(protocol) {
			merged = q.mergeProtocol(merged, q.protocolOf(ctx, r, protocol))
		}
	}
	if merged == nil {
		return nil, merr.NotFound("No application service bridges the protocol %s", protocol)
	}
	return merged, nil
}

func (q *Queries) protocolOf(ctx context.Context, r *Registration, protocol string) json.RawMessage {
	if r.URL == "" {
		return nil
	}
	status, raw, err := q.do(ctx, r, http.MethodGet, "/_matrix/app/v1/thirdparty/protocol/"+url.PathEscape(protocol), nil)
	if err != nil || status != http.StatusOK || !json.Valid(raw) {
		if err != nil {
			logging.From(ctx).WithError(err).WithField("appservice", r.ID).Warn("appservice: third-party protocol query failed")
		}
		return nil
	}
	return raw
}

// mergeProtocol adds the instances of b to a (either may be nil).
func (q *Queries) mergeProtocol(a, b json.RawMessage) json.RawMessage {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	var ma, mb map[string]json.RawMessage
	if json.Unmarshal(a, &ma) != nil || json.Unmarshal(b, &mb) != nil {
		return a
	}
	var ia, ib []json.RawMessage
	_ = json.Unmarshal(ma["instances"], &ia)
	_ = json.Unmarshal(mb["instances"], &ib)
	ma["instances"], _ = json.Marshal(append(ia, ib...))
	out, _ := json.Marshal(ma)
	return out
}

// Lookup forwards a third-party location or user lookup: kind is
// "location" or "user"; with a protocol, to the services that bridge it
// (GET /_matrix/app/v1/thirdparty/{kind}/{protocol}?fields...), without
// one to every service that bridges some protocol (the reverse lookups
// /thirdparty/location?alias= and /thirdparty/user?userid=). The answers
// are concatenated; a failing service adds nothing.
func (q *Queries) Lookup(ctx context.Context, kind, protocol string, query url.Values) ([]json.RawMessage, error) {
	path := "/_matrix/app/v1/thirdparty/" + kind
	if protocol != "" {
		path += "/" + url.PathEscape(protocol)
	}
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	out := []json.RawMessage{}
	found := false
	for _, r := range q.reg.regs {
		if len(r.Protocols) == 0 || protocol != "" && !r.HasProtocol(protocol) {
			continue
		}
		found = true
		if r.URL == "" {
			continue
		}
		status, raw, err := q.do(ctx, r, http.MethodGet, path, nil)
		if err != nil || status != http.StatusOK {
			if err != nil {
				logging.From(ctx).WithError(err).WithField("appservice", r.ID).Warn("appservice: third-party lookup failed")
			}
			continue
		}
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) == nil {
			out = append(out, list...)
		}
	}
	if protocol != "" && !found {
		return nil, merr.NotFound("No application service bridges the protocol %s", protocol)
	}
	return out, nil
}
