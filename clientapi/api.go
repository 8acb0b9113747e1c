package clientapi

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/clientip"
	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/userapi"
)

// Auth levels of a route.
type authLevel int

const (
	authNone     authLevel = iota // no token needed (a token, if sent, is ignored)
	authOptional                  // a valid token is used if sent; none is fine
	authUser                      // a valid token is required
	authAdmin                     // a valid token of a server admin is required
	// authAppService: an application service's token, if sent, makes the
	// request the service's (as itself; /register and /login); any other
	// token is ignored.
	authAppService
)

// Rate-limit classes of a route.
type limitClass int

const (
	limitNone     limitClass = iota
	limitLogin               // per client address, login_per_minute
	limitRegister            // per client address, register_per_minute
	limitMessage             // per user, messages_per_second
)

// Route is one row of the route table.
type Route struct {
	Method string
	Path   string
	H      httpx.HandlerFunc
	Auth   authLevel
	Limit  limitClass
	// OwnBody marks a route that limits its request body itself (media
	// uploads): max_request_bytes does not apply to it.
	OwnBody bool
	// ExpiredOK marks a route an expired access token may still use
	// (logging out).
	ExpiredOK bool
	// AuditOp names an admin API route's operation in the audit log
	// ("admin." + AuditOp); without it the method and path stand in.
	AuditOp string
}

// authenticator resolves access tokens.
type authenticator interface {
	Authenticate(ctx context.Context, token string) (userapi.Device, error)
}

// API is the client API: configuration, services and limiters.
type API struct {
	Cfg   config.Config
	Log   *logrus.Logger
	Auth  authenticator
	Rooms roomService
	Sync  syncService
	// Peeks starts and ends peeks into world-readable rooms (the sync engine).
	Peeks peeker
	// Filters and AccountData come from the user API.
	Filters     filterSource
	AccountData accountDataWriter
	Tags        tagStore
	Directory   directory
	// Users is the user API (accounts, devices, profiles, account data,
	// filters, push rules); Leaver and Propagator, when set, reach the
	// roomserver for deactivation and profile changes.
	Users      *userapi.Service
	Leaver     roomLeaver
	Propagator profilePropagator
	// Readiness, when set, backs /health and /health/ready.
	Readiness Readiness
	// RemoteProfiles, when set (federation on), answers profiles of other
	// servers' users.
	RemoteProfiles RemoteProfiles
	// ProfileVisibility, when set, decides profile look-ups with
	// profiles.limit_to_shared_rooms (the roomserver); unset, every
	// profile is visible.
	ProfileVisibility profileVisibility
	Limiter           *Limiter
	// AppServices, when set, resolves application services' tokens
	// (appservice.Service): the service, or a user it acts as.
	AppServices appServices
	// Areas add their routes; see routes().
	Areas []func() []Route
	// Observe is told about each request (metrics).
	Observe httpx.Observer
	// Handoff, when set, lets waiting /sync requests park their connection
	// instead of holding a goroutine and the server's buffers.
	Handoff *httpx.Handoff
	// ParkAbove: a waiting /sync parks only when more than this many are
	// waiting. Below it, a wait keeps its goroutine, which costs less CPU
	// per answer; above it, parking keeps memory flat (docs/benchmarks.md).
	ParkAbove int

	// RemoteDirectory, when set (federation on), lists other servers'
	// public rooms (GET/POST /publicRooms?server=).
	RemoteDirectory RemoteDirectory

	// Audit, when set, records every call of the admin API
	// (/_synapse/admin/), allowed or refused (admin_audit.go).
	Audit auditRecorder

	// LoginAudit, when set, records the login and registration attempts
	// the rate limits refuse (internal/audit).
	LoginAudit loginAuditor
}

// loginAuditor records refused attempts in the audit log (audit.Log).
type loginAuditor interface {
	Record(ctx context.Context, e audit.Entry)
}

type addrKey struct{}

// withClientAddr derives each request's client address once, with the
// trusted proxies of the config (trusted_proxies; config.Check refused bad
// items), and keeps it in the request's context for clientAddr.
func (a *API) withClientAddr(next http.Handler) http.Handler {
	proxies, _ := clientip.New(a.Cfg.TrustedProxies.Items())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := proxies.Addr(r)
		ctx := userapi.WithUserAgent(context.WithValue(r.Context(), addrKey{}, addr), r.UserAgent())
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

type deviceKey struct{}

// DeviceFrom returns the authenticated device of a request on an authUser route.
func DeviceFrom(r *http.Request) userapi.Device {
	d, _ := r.Context().Value(deviceKey{}).(userapi.Device)
	return d
}

// HasDevice tells whether the request carried a valid token (authOptional routes).
func HasDevice(r *http.Request) bool {
	_, ok := r.Context().Value(deviceKey{}).(userapi.Device)
	return ok
}

// PathParam returns a URL parameter, percent-decoded.
func PathParam(r *http.Request, name string) string {
	raw := chi.URLParam(r, name)
	if v, err := url.PathUnescape(raw); err == nil {
		return v
	}
	return raw
}

// legacyPaths are the older forms of a v3 path that clients from before
// spec v1.1 (older Element and matrix-js-sdk releases, many bots) call:
// /_matrix/client/r0 and /_matrix/media/r0 for everything, and
// /_matrix/client/unstable for key backup and cross-signing, which they
// used before those were in a release. v3 kept those endpoints as they
// were, so the same handlers answer all forms.
func legacyPaths(path string) []string {
	var out []string
	for _, p := range [...]string{"/_matrix/client/", "/_matrix/media/"} {
		if rest, ok := strings.CutPrefix(path, p+"v3/"); ok {
			out = append(out, p+"r0/"+rest)
			if p == "/_matrix/client/" && (strings.HasPrefix(rest, "room_keys/") || rest == "keys/device_signing/upload" || rest == "keys/signatures/upload") {
				out = append(out, p+"unstable/"+rest)
			}
		}
	}
	return out
}

// Router builds the HTTP handler of the whole client API.
func (a *API) Router() http.Handler {
	mux := chi.NewRouter()
	mux.Use(a.withClientAddr)
	mux.Use(httpx.AccessLog(a.Log, a.Observe))
	mux.Use(httpx.CORS)
	// The body limit wraps each route (not the whole mux) so that routes
	// with OwnBody can go without it.
	limitBody := func(next http.Handler) http.Handler { return next }
	if limit := a.Cfg.MaxRequestBytes; limit > 0 {
		limitBody = func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.ContentLength > limit {
					httpx.WriteError(w, r, merr.TooLarge("Request body is larger than %d bytes", limit))
					return
				}
				// Only bodies that exist get the limit: the limiting reader keeps
				// the response writer, which a parked /sync must let go of.
				if r.Body != nil && r.Body != http.NoBody {
					r.Body = http.MaxBytesReader(w, r.Body, limit)
				}
				next.ServeHTTP(w, r)
			})
		}
	}
	mux.NotFound(httpx.Handle(func(w http.ResponseWriter, r *http.Request) error {
		return merr.Unrecognized("Unrecognized request")
	}))
	mux.MethodNotAllowed(httpx.Handle(func(w http.ResponseWriter, r *http.Request) error {
		return merr.MethodNotAllowed()
	}))
	for _, area := range a.Areas {
		for _, rt := range area() {
			h := a.wrap(rt)
			if !rt.OwnBody {
				h = limitBody(h)
			}
			mux.Method(rt.Method, rt.Path, h)
			for _, old := range legacyPaths(rt.Path) {
				mux.Method(rt.Method, old, h)
			}
		}
	}
	return mux
}

func (a *API) wrap(rt Route) http.Handler {
	return httpx.Handle(a.audited(rt, func(w http.ResponseWriter, r *http.Request) error {
		if ri := httpx.Info(r.Context()); ri != nil {
			ri.Route = rt.Path
		}
		if rt.Auth != authNone {
			token := httpx.BearerToken(r)
			if token == "" {
				if rt.Auth != authOptional && rt.Auth != authAppService {
					return merr.MissingToken("Missing access token")
				}
			} else {
				// The client address becomes the device's last-seen address.
				dev, ok, err := a.authenticate(r, token, rt)
				if err != nil {
					return err
				}
				if ok {
					// Known before the checks below, so that a refusal is
					// logged (and audited) with who was refused.
					if ri := httpx.Info(r.Context()); ri != nil {
						ri.UserID, ri.DeviceID = dev.UserID, dev.DeviceID
					}
					if rt.Auth == authAdmin && !dev.IsAdmin {
						return merr.Forbidden("You are not a server admin")
					}
					if dev.IsGuest && !guestAllowed(rt, r) {
						return merr.GuestAccessForbidden("Guests may not use this endpoint")
					}
					r = r.WithContext(context.WithValue(r.Context(), deviceKey{}, dev))
				}
			}
		}
		if a.Limiter != nil && rt.Limit != limitNone && a.rateLimited(r) {
			key := clientAddr(r)
			if rt.Limit == limitMessage {
				key = DeviceFrom(r).UserID
			}
			if wait := a.Limiter.Allow(rt.Limit, key, time.Now()); wait > 0 {
				if a.LoginAudit != nil && rt.Limit != limitMessage {
					a.LoginAudit.Record(r.Context(), audit.Entry{Action: audit.LoginRefused, Addr: key,
						Detail: map[string]any{"reason": "rate_limit", "path": rt.Path}})
				}
				return merr.LimitExceeded(wait.Milliseconds() + 1)
			}
			if rt.Limit == limitRegister {
				// A registration through a client takes two plain UIA
				// challenges (the flows, then the session for the username)
				// before the request that creates the account: each
				// challenge costs a third of a token, so the configured
				// registrations per minute are registrations, not requests.
				defer func() {
					if ri := httpx.Info(r.Context()); ri != nil && ri.ErrCode == uiaChallengeCode {
						a.Limiter.Refund(rt.Limit, key, 2.0/3)
					}
				}()
			}
		}
		if err := checkPathParams(r); err != nil {
			return err
		}
		return rt.H(w, r)
	}))
}

// checkPathParams refuses path parameters that no Matrix identifier, type
// or transaction ID can hold: a NUL byte or invalid UTF-8 (after
// percent-decoding). Handlers and the database never see them (PostgreSQL
// fails on such text, which would be a 500).
func checkPathParams(r *http.Request) error {
	rc := chi.RouteContext(r.Context())
	if rc == nil {
		return nil
	}
	for i, raw := range rc.URLParams.Values {
		v, err := url.PathUnescape(raw)
		if err != nil {
			v = raw
		}
		if !storage.StorableText(v) {
			name := "path"
			if i < len(rc.URLParams.Keys) {
				name = rc.URLParams.Keys[i]
			}
			return merr.InvalidParam("Path parameter %s is not valid UTF-8 text", name)
		}
	}
	return nil
}

// clientAddr is the request's client address (internal/clientip, with
// the trusted proxies): what rate limits count against, the login
// slowdown remembers, devices show as last seen and the audit log records.
func clientAddr(r *http.Request) string {
	if addr, ok := r.Context().Value(addrKey{}).(string); ok {
		return addr
	}
	return clientip.Trusted{}.Addr(r) // a request that did not come through Router
}
