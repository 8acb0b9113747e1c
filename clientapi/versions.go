package clientapi

import (
	"context"
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
)

// SpecVersions are the Client-Server API versions Haven implements: up to
// v1.11 (authenticated media, the last feature those versions added that
// clients depend on). mautrix bridges want v1.4 or later; matrix-js-sdk
// switches authenticated media on from v1.11.
//
// The r0 releases are listed too: their endpoints are served under
// /_matrix/client/r0 (see legacyPaths), and clients from before v1.1 look
// for them.
var SpecVersions = []string{"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11"}

// UnstableFeatures are the unstable flags that are true on this server.
var UnstableFeatures = map[string]bool{
	// private read receipts (m.read.private), stable since v1.4
	"org.matrix.msc2285.stable": true,
	// authenticated media (/_matrix/client/v1/media/...), stable since v1.11
	"org.matrix.msc3916.stable": true,
	// threads (m.thread relations and their aggregation), stable since v1.4
	"org.matrix.msc3440.stable": true,
	// GET /rooms/{roomId}/threads, stable since v1.4
	"org.matrix.msc3856": true,
	// dir=f on /relations, stable since v1.4
	"org.matrix.msc3715": true,
	// recurse on /relations, stable since v1.10
	"org.matrix.msc3981": true,
	// cross-signing (keys/device_signing/upload, keys/signatures/upload):
	// without it Element with Rust crypto says the server cannot cross-sign
	"org.matrix.e2e_cross_signing": true,
	// GET /rooms/{roomId}/aliases
	"org.matrix.msc2432": true,
	// the room_types filter of POST /publicRooms: without it Element never
	// shows public spaces in the room directory
	"org.matrix.msc3827.stable": true,
	// threaded read receipts (thread_id on /receipt)
	"org.matrix.msc3771": true,
	// unread_thread_notifications in /sync (filter flag of the same name)
	"org.matrix.msc3773": true,
	// simplified sliding sync (MSC4186), the only sync Element X speaks
	// (slidingsync.go)
	"org.matrix.simplified_msc3575": true,
}

func (a *API) versionRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/_matrix/client/versions", H: a.versions, Auth: authNone},
		{Method: "GET", Path: "/.well-known/matrix/client", H: a.wellKnown, Auth: authNone},
		{Method: "GET", Path: "/health", H: a.health, Auth: authNone},
		{Method: "GET", Path: "/health/live", H: health, Auth: authNone},
		{Method: "GET", Path: "/health/ready", H: a.healthReady, Auth: authNone},
		// Element asks for these at start; with no TURN server (see voip.go)
		// and no bridges configured the empty answers are the right ones.
		{Method: "GET", Path: v3 + "/voip/turnServer", H: a.turnServer, Auth: authUser},
		{Method: "GET", Path: v3 + "/thirdparty/protocols", H: emptyObject, Auth: authUser},
	}
}

func (a *API) versions(w http.ResponseWriter, r *http.Request) error {
	return httpx.JSON(w, http.StatusOK, map[string]any{"versions": SpecVersions, "unstable_features": UnstableFeatures})
}

func (a *API) wellKnown(w http.ResponseWriter, r *http.Request) error {
	base := a.Cfg.PublicBaseURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"m.homeserver": map[string]string{"base_url": base}})
}

// Check is one readiness check's result.
type Check struct {
	Name   string `json:"-"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Readiness tells whether what serving needs is there (the server wires
// the database, the bus and the disk in).
type Readiness interface {
	Ready(ctx context.Context) []Check
}

// healthReady answers 200 when every readiness check passes, 503 with the
// failed ones otherwise (load balancers and monitoring read the status;
// people read the body). /health fails the same way: a server whose
// database is away is not healthy.
func (a *API) healthReady(w http.ResponseWriter, r *http.Request) error {
	if a.Readiness == nil {
		return health(w, r)
	}
	checks := a.Readiness.Ready(r.Context())
	status, body := http.StatusOK, map[string]Check{}
	for _, c := range checks {
		body[c.Name] = c
		if !c.OK {
			status = http.StatusServiceUnavailable
		}
	}
	return httpx.JSON(w, status, map[string]any{"ready": status == http.StatusOK, "checks": body})
}

// health is /health: readiness with the plain "OK" of before while all
// is well (what load balancers and scripts already expect), the checks
// as /health/ready gives them otherwise.
func (a *API) health(w http.ResponseWriter, r *http.Request) error {
	if a.Readiness != nil {
		for _, c := range a.Readiness.Ready(r.Context()) {
			if !c.OK {
				return a.healthReady(w, r)
			}
		}
	}
	return health(w, r)
}

// health is liveness: the process answers.
func health(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("OK"))
	return nil
}

// Routes is every area's routes together.
func (a *API) BaseAreas() []func() []Route {
	return []func() []Route{a.versionRoutes}
}

// RoomAreas are the routes of rooms, sync and their ephemeral data.
func (a *API) RoomAreas() []func() []Route {
	return []func() []Route{a.roomRoutes, a.syncRoutes, a.tagRoutes, a.directoryRoutes, a.legacyRoutes, a.peekRoutes, a.slidingRoutes}
}

func emptyObject(w http.ResponseWriter, r *http.Request) error { return httpx.OK(w) }
