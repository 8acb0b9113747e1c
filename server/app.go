// Package server wires a Haven server together from its configuration: the
// database, the bus, the services and the HTTP listeners. cmd/haven and the
// end-to-end tests use it; it holds no logic of its own.
//
// Goroutines: besides the listeners, Serve starts memtrim and the
// housekeeping loop (housekeeping.go: readiness, user and room figures
// and the certificate's expiry as metrics; the audit log's retention),
// both ended with Serve.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/adminapi/regtokens"
	"github.com/haven-chat/haven/adminapi/reports"
	"github.com/haven-chat/haven/appservice"
	"github.com/haven-chat/haven/clientapi"
	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/bus"
	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/memtrim"
	"github.com/haven-chat/haven/internal/metrics"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/mediaapi"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/syncapi"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/keys"
	"github.com/haven-chat/haven/userapi/oauth"
	"github.com/haven-chat/haven/userapi/roomkeys"
	"github.com/haven-chat/haven/userapi/totp"
)

// App is a running server.
type App struct {
	Cfg  config.Config
	Log  *logrus.Logger
	DB   *storage.DB
	Bus  *bus.Bus
	Key  serverkey.Key
	HTTP http.Handler
	// Users is the user API: accounts, devices, tokens, profiles, account data.
	Users *userapi.Service
	// Keys is the key service: E2EE keys, to-device messages, device lists.
	Keys *keys.Service
	// devices is told of added and deleted devices.
	devices deviceObservers
	// keysFed is the key service's way to other servers (todevice.go).
	keysFed keysFederation
	// TOTP keeps the users' second factors (totp.go).
	TOTP *totp.Service
	// OAuth is the OAuth 2.0 API (oauth.go); nil when off.
	OAuth *oauth.Service
	// Rooms and Sync are the roomserver and the sync engine.
	Rooms *roomserver.Service
	Sync  *syncapi.Service
	// Audit is the audit log (internal/audit).
	Audit *audit.Log

	api             *clientapi.API
	fed             *federation
	media           *mediaapi.Service
	asQueries       *appservice.Queries
	listener        net.Listener
	metricsListener net.Listener
	closers         []func()
	// roomData are the owners of room rows outside the roomserver, told
	// of purged rooms (adminrooms.go).
	roomData []roomDataPurger
}

// OpenDB opens and migrates the configured database.
func OpenDB(ctx context.Context, cfg config.Config) (*storage.DB, error) {
	t, err := storage.ParseTarget(cfg.Database, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	return storage.Open(ctx, t, storage.Options{MaxOpenConns: cfg.DatabasePool, SQLiteSynchronous: cfg.SQLiteSynchronous})
}

// PasswordPolicy is the password policy of the configuration.
func PasswordPolicy(cfg config.Config) userapi.PasswordPolicy {
	return userapi.PasswordPolicy{MinLength: cfg.PasswordPolicy.MinLength, RefuseCommon: cfg.PasswordPolicy.RefuseCommon}
}

// ParkAbove is how many /syncs may wait on goroutines of their own before
// new ones park their connections (see clientapi.API.ParkAbove): 1,000
// waiting goroutines cost about 50 MiB, and parking costs about a tenth
// more CPU per answer.
const ParkAbove = 1000

// New builds the server without listening yet.
func New(ctx context.Context, cfg config.Config, log *logrus.Logger) (_ *App, err error) {
	a := &App{Cfg: cfg, Log: log}
	defer func() {
		if err != nil {
			a.Close() // whatever was opened before the failure
		}
	}()
	if a.DB, err = OpenDB(ctx, cfg); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.DB.Close)
	target, _ := storage.ParseTarget(cfg.Database, cfg.DataDir)
	release, err := a.DB.AcquireWriter(ctx, target.Path)
	if errors.Is(err, storage.ErrWriterLocked) {
		return nil, fmt.Errorf("%w (%s). Stop the other process first; several Haven processes on one database are not supported yet", err, a.DB.Location)
	}
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, release)
	metrics.RegisterQueryCount(storage.Queries.Load)
	metrics.RegisterPools(func() []metrics.PoolStat {
		var out []metrics.PoolStat
		for _, s := range a.DB.Stats() {
			out = append(out, metrics.PoolStat{Name: s.Name, Open: s.OpenConnections, InUse: s.InUse, Idle: s.Idle, WaitCount: s.WaitCount, WaitDuration: s.WaitDuration})
		}
		return out
	})
	metrics.RegisterDisk(func() float64 {
		d, _ := Disk(cfg.DataDir)
		return float64(d.Free)
	}, func() float64 {
		d, _ := Disk(cfg.DataDir)
		return float64(d.Total)
	})
	if a.Key, err = serverkey.Load(ctx, a.DB); err != nil {
		return nil, err
	}
	if a.Bus, err = bus.Start(ctx, bus.Options{URL: cfg.NATS.URL, StoreDir: filepath.Join(cfg.DataDir, "nats"), Namespace: cfg.ServerName}); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.Bus.Close)
	if err = a.openKeys(ctx); err != nil {
		return nil, err
	}
	if err = a.openAppServiceQueries(); err != nil {
		return nil, err
	}
	a.Audit = audit.New(a.DB)
	regTokens := regtokens.New(a.DB)
	dir, err := a.directory()
	if err != nil {
		return nil, err
	}
	if a.Users, err = userapi.New(ctx, a.DB, a.Bus, userapi.Options{ServerName: cfg.ServerName,
		PasswordHashCost: cfg.PasswordHashCost, SharedSecret: cfg.Registration.SharedSecret, DeviceLists: &a.devices,
		AppServices: a.userNamespaces(), AccessTokenLifetime: cfg.TokenLifetime(),
		RegistrationTokens: regTokens, RequireRegistrationToken: cfg.Registration.RequireToken,
		Audit: a.Audit, PasswordPolicy: PasswordPolicy(cfg),
		SecondFactor: a.openTOTP(), Directory: dir,
		Mail: a.mailSender(), PublicBaseURL: strings.TrimRight(cfg.PublicBaseURL, "/"), EmailTokensPerHour: cfg.Email.TokensPerHour,
		AccountURL: a.accountURL(), UpstreamUIA: len(cfg.OIDC.Providers) > 0}); err != nil {
		return nil, err
	}
	if err = a.Users.Start(ctx); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.Users.Close)

	if err = a.openFederation(ctx); err != nil {
		return nil, err
	}
	api := &clientapi.API{Cfg: cfg, Log: log, Limiter: clientapi.NewLimiter(cfg.RateLimits), Observe: metrics.Observe,
		ParkAbove: ParkAbove, Audit: a.Audit, LoginAudit: a.Audit}
	api.Areas = append(api.Areas, api.BaseAreas()...)
	api.Auth, api.Users, api.Filters, api.AccountData = a.Users, a.Users, a.Users, a.Users
	if err = a.wireRooms(ctx, api, a.Users); err != nil {
		return nil, err
	}
	if a.Rooms != nil {
		api.Leaver, api.Propagator, api.ProfileVisibility = a.Rooms, a.Rooms, a.Rooms
	}
	if a.fed != nil {
		api.RemoteProfiles = a.fed.peers
		api.RemoteDirectory = a.fed.peers
	}
	api.Readiness = readiness{a}
	if a.Sync != nil {
		api.Areas = append(api.Areas, api.SearchArea(a.Sync), api.RelationsArea(a.Sync))
		if err = a.openRemoteKeys(); err != nil {
			return nil, err
		}
		api.Areas = append(api.Areas, api.KeysArea(keysAPI{a.Keys, a.Sync, a.remoteKeys()}))
	}
	api.Areas = append(api.Areas, api.RoomKeysArea(roomkeys.New(a.DB)))
	if a.Rooms != nil && a.Sync != nil {
		api.Areas = append(api.Areas, api.SpacesArea(a.Rooms), api.ReportsArea(reports.New(a.DB), a.Sync, a.Rooms))
	}
	api.Areas = append(api.Areas, api.UserAreas()...)
	signInAreas, err := a.signInAreas(api)
	if err != nil {
		return nil, err
	}
	api.Areas = append(api.Areas, signInAreas...)
	api.Areas = append(api.Areas, api.AdminUsersArea, api.RegistrationTokensArea(regTokens), api.AuditArea(a.Audit))
	if err = a.wireAppServices(ctx, api); err != nil {
		return nil, err
	}
	if err = a.wireMedia(ctx, api); err != nil {
		return nil, err
	}
	if err = a.startFederation(ctx); err != nil {
		return nil, err
	}
	a.HTTP = api.Router()
	a.api = api
	return a, nil
}

// wireMedia starts the media repository and adds its routes.
func (a *App) wireMedia(ctx context.Context, api *clientapi.API) error {
	m := a.Cfg.Media
	svc, err := mediaapi.New(ctx, a.DB, mediaapi.Options{
		ServerName: a.Cfg.ServerName, Dir: filepath.Join(a.Cfg.DataDir, "media"),
		MaxUploadBytes: m.MaxUploadBytes, QuotaBytesPerUser: m.QuotaBytesPerUser, MaxThumbnailPixels: m.MaxThumbnailPixels,
		MaxPendingUploads: m.MaxPendingUploads, ThumbnailWorkers: m.ThumbnailWorkers,
		Preview: mediaapi.PreviewOptions{Enabled: m.URLPreviews, Denied: prefixes(m.URLPreviewDeniedRanges), Allowed: prefixes(m.URLPreviewAllowedRanges)},
		Remote:  a.mediaFetcher(), RemoteAllowed: a.allowedServer(),
	})
	if err != nil {
		return err
	}
	svc.Start(context.WithoutCancel(ctx))
	a.closers = append(a.closers, svc.Close)
	api.Areas = append(api.Areas, api.MediaArea(svc))
	a.media = svc
	a.wireAdminRooms(api, svc)
	return nil
}

// prefixes parses a list of CIDR ranges (config.Check has refused bad ones).
func prefixes(l config.List) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range l.Items() {
		if p, err := netip.ParsePrefix(r); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Listen opens the listeners (the client API and, if configured, metrics).
func (a *App) Listen() error {
	l, err := net.Listen("tcp", a.Cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.Cfg.Listen, err)
	}
	a.listener = l
	if a.Cfg.Metrics.Listen != "" {
		ml, err := net.Listen("tcp", a.Cfg.Metrics.Listen)
		if err != nil {
			l.Close()
			return fmt.Errorf("metrics.listen %s: %w", a.Cfg.Metrics.Listen, err)
		}
		a.metricsListener = ml
	}
	if err := a.listenFederation(); err != nil {
		l.Close()
		if a.metricsListener != nil {
			a.metricsListener.Close()
		}
		return err
	}
	return nil
}

// Addr is the address the client API listens on.
func (a *App) Addr() string { return a.listener.Addr().String() }

// Serve serves until ctx ends, then shuts down gracefully.
func (a *App) Serve(ctx context.Context) error {
	// Requests run under base: cancelling it at shutdown ends waiting
	// long-polls at once instead of letting them hold the shutdown up.
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := &http.Server{
		BaseContext:       func(net.Listener) context.Context { return base },
		Handler:           a.HTTP,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		// /sync long-polls for up to its timeout (capped) before writing.
		WriteTimeout:   5 * time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       nil,
	}
	errc := make(chan error, 3)
	// Connections of parked /sync requests come back through the Handoff.
	handoff := httpx.NewHandoff(a.listener, srv.ReadHeaderTimeout, srv.IdleTimeout)
	a.api.Handoff = handoff
	srv.ConnState, srv.ConnContext = handoff.ConnState, handoff.ConnContext
	metrics.RegisterWaitingConns(handoff.Waiting)
	go func() { errc <- srv.Serve(handoff) }()
	// After a burst (every client reconnecting after a restart), give the
	// memory back once the server is quiet again.
	go memtrim.New(memtrim.DefaultThreshold, a.Log).Run(base, memtrim.DefaultInterval)
	// Metrics counted in the database, and the audit log's retention.
	go a.housekeeping(base)
	var msrv *http.Server
	if a.metricsListener != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler())
		// Profiles for operators, on the private metrics listener only.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		msrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- msrv.Serve(a.metricsListener) }()
	}
	stopFed := a.serveFederation(ctx, base, errc)
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.SetKeepAlivesEnabled(false)
	cancelBase()
	_ = srv.Shutdown(sctx)
	if msrv != nil {
		_ = msrv.Shutdown(sctx)
	}
	stopFed(sctx)
	return nil
}

// Close releases everything, in reverse order of opening.
func (a *App) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}
