package keys

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/federationapi/origin"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// MaxRequestBytes bounds the body of an authenticated federation request
// (a /send transaction of 50 PDUs and 100 EDUs stays well below). Routes
// that expect less wrap the body with a smaller http.MaxBytesReader before
// Authenticate.
const MaxRequestBytes = 16 << 20

// XMatrix is one parsed "Authorization: X-Matrix ..." header.
type XMatrix struct {
	Origin      string
	Destination string // "" when the header has none
	Key         gomatrixserverlib.KeyID
	Sig         string
}

// errBadHeader is why an X-Matrix header does not parse.
var errBadHeader = errors.New("malformed X-Matrix authorization header")

// ParseXMatrix parses an Authorization header value of the X-Matrix
// scheme: `X-Matrix origin=...,destination=...,key="...",sig="..."`.
// Values are tokens or quoted strings (with backslash escapes); names are
// case-insensitive; unknown parameters are ignored and a repeated one is
// refused. origin, key and sig are required. ok is false for another
// scheme; err is set for an X-Matrix header that does not parse.
func ParseXMatrix(header string) (x XMatrix, ok bool, err error) {
	scheme, rest, _ := strings.Cut(strings.TrimLeft(header, " \t"), " ")
	if !strings.EqualFold(scheme, "X-Matrix") {
		return XMatrix{}, false, nil
	}
	seen := map[string]bool{}
	p := rest
	for {
		p = strings.TrimLeft(p, " \t")
		if p == "" {
			break
		}
		if p[0] == ',' {
			p = p[1:]
			continue
		}
		i := strings.IndexAny(p, "= \t,")
		if i <= 0 {
			return XMatrix{}, true, errBadHeader
		}
		name := strings.ToLower(p[:i])
		p = strings.TrimLeft(p[i:], " \t")
		if p == "" || p[0] != '=' {
			return XMatrix{}, true, errBadHeader
		}
		p = strings.TrimLeft(p[1:], " \t")
		var value string
		if p != "" && p[0] == '"' {
			var b strings.Builder
			closed := false
			j := 1
			for ; j < len(p); j++ {
				c := p[j]
				if c == '\\' && j+1 < len(p) {
					j++
					b.WriteByte(p[j])
					continue
				}
				if c == '"' {
					closed = true
					break
				}
				b.WriteByte(c)
			}
			if !closed {
				return XMatrix{}, true, errBadHeader
			}
			value, p = b.String(), p[j+1:]
		} else {
			j := strings.IndexAny(p, " \t,")
			if j < 0 {
				j = len(p)
			}
			value, p = p[:j], p[j:]
		}
		p = strings.TrimLeft(p, " \t")
		if p != "" && p[0] != ',' {
			return XMatrix{}, true, errBadHeader
		}
		if seen[name] {
			return XMatrix{}, true, errBadHeader
		}
		seen[name] = true
		switch name {
		case "origin":
			x.Origin = value
		case "destination":
			x.Destination = value
		case "key":
			x.Key = gomatrixserverlib.KeyID(value)
		case "sig":
			x.Sig = value
		}
	}
	if x.Origin == "" || x.Key == "" || x.Sig == "" {
		return XMatrix{}, true, errBadHeader
	}
	return x, true, nil
}

// signedRequest is the JSON a federation request's signature covers.
type signedRequest struct {
	Method      string                                                 `json:"method"`
	URI         string                                                 `json:"uri"`
	Origin      string                                                 `json:"origin"`
	Destination string                                                 `json:"destination"`
	Content     json.RawMessage                                        `json:"content,omitempty"`
	Signatures  map[string]map[gomatrixserverlib.KeyID]json.RawMessage `json:"signatures"`
}

// Authenticate returns middleware that admits a request only with a valid
// X-Matrix signature of an allowed server (allowed nil: every server).
// Several Authorization headers may be sent; one good signature is
// enough. In order:
//   - no X-Matrix header, or one that does not parse: 401 M_UNAUTHORIZED;
//   - an origin allowed refuses: 403 M_FORBIDDEN, before any other work
//     (no body read, no key fetch);
//   - a destination other than serverName: 401 M_UNAUTHORIZED;
//   - a body over MaxRequestBytes: 413 M_TOO_LARGE; not JSON: 400 M_NOT_JSON;
//   - a signature that does not verify with the origin's keys: 401.
//
// The body read is put back for the handler, and the origin is in the
// request's context (origin.From).
func Authenticate(v gomatrixserverlib.JSONVerifier, serverName string, allowed func(server string) bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return httpx.Handle(func(w http.ResponseWriter, r *http.Request) error {
			ctx := r.Context()
			req, err := authorization(r, serverName, allowed)
			if err != nil {
				return err
			}
			body, err := httpx.ReadBody(r, MaxRequestBytes)
			if err != nil {
				return err
			}
			if len(bytes.TrimSpace(body)) > 0 {
				if !json.Valid(body) || !utf8.Valid(body) {
					return merr.NotJSON("Content not JSON")
				}
				req.Content = body
			}
			message, err := json.Marshal(req)
			if err != nil {
				return merr.Unauthorized("Invalid X-Matrix authorization").Wrap(err)
			}
			results, err := v.VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{
				ServerName:           spec.ServerName(req.Origin),
				AtTS:                 spec.AsTimestamp(time.Now()),
				Message:              message,
				ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
			}})
			if err != nil {
				return err
			}
			if len(results) != 1 || results[0].Error != nil {
				var why error
				if len(results) == 1 {
					why = results[0].Error
				}
				logging.From(ctx).WithError(why).WithFields(logrus.Fields{"origin": req.Origin, "uri": req.URI}).Info("federation request signature refused")
				return merr.Unauthorized("Invalid X-Matrix signature")
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			ctx = logging.WithField(ctx, "origin", req.Origin)
			next.ServeHTTP(w, r.WithContext(origin.With(ctx, req.Origin)))
			return nil
		})
	}
}

// authorization reads the X-Matrix headers of r into the JSON to verify
// (without its content).
func authorization(r *http.Request, serverName string, allowed func(string) bool) (*signedRequest, error) {
	var headers []XMatrix
	for _, h := range r.Header.Values("Authorization") {
		x, ok, err := ParseXMatrix(h)
		if !ok {
			continue
		}
		if err != nil {
			return nil, merr.Unauthorized("Malformed X-Matrix authorization header")
		}
		headers = append(headers, x)
	}
	if len(headers) == 0 {
		return nil, merr.Unauthorized("Missing X-Matrix authorization header")
	}
	from := headers[0].Origin
	for _, x := range headers[1:] {
		if x.Origin != from {
			return nil, merr.Unauthorized("X-Matrix authorization headers name different origins")
		}
	}
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(from)); !ok || !storage.StorableText(from) {
		return nil, merr.Unauthorized("X-Matrix origin is not a server name")
	}
	if allowed != nil && !allowed(from) {
		return nil, merr.Forbidden("Federation with %s is not allowed", from)
	}
	sigs := map[gomatrixserverlib.KeyID]json.RawMessage{}
	for _, x := range headers {
		if x.Destination != "" && x.Destination != serverName {
			continue
		}
		sig, err := json.Marshal(x.Sig)
		if err != nil {
			continue
		}
		sigs[x.Key] = sig
	}
	if len(sigs) == 0 {
		return nil, merr.Unauthorized("X-Matrix destination is not this server")
	}
	return &signedRequest{
		Method:      r.Method,
		URI:         requestURI(r),
		Origin:      from,
		Destination: serverName,
		Signatures:  map[string]map[gomatrixserverlib.KeyID]json.RawMessage{from: sigs},
	}, nil
}

// requestURI is the path and query of r as the client sent them.
func requestURI(r *http.Request) string {
	uri := r.RequestURI
	if uri == "" {
		return r.URL.RequestURI()
	}
	if !strings.HasPrefix(uri, "/") {
		// The absolute form (a request through a proxy).
		if i := strings.Index(uri, "://"); i >= 0 {
			rest := uri[i+3:]
			if j := strings.IndexByte(rest, '/'); j >= 0 {
				return rest[j:]
			}
			return "/"
		}
	}
	return uri
}
