package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/haven-chat/haven/federationapi"
	"github.com/haven-chat/haven/federationapi/client"
	"github.com/haven-chat/haven/federationapi/history"
	"github.com/haven-chat/haven/federationapi/keys"
	"github.com/haven-chat/haven/federationapi/origin"
	"github.com/haven-chat/haven/federationapi/outbound"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/metrics"
	"github.com/haven-chat/haven/mediaapi"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi"
	userkeys "github.com/haven-chat/haven/userapi/keys"
)

// federation is the Server-Server API's part of a running server.
type federation struct {
	client *client.Client
	store  *keys.Store
	keySrv *keys.Server
	peers  *federationapi.Peers
	queues *outbound.Queues
	// remoteKeys is the cache of other servers' users' device lists.
	remoteKeys *userkeys.Remote
	tls        *tls.Config
	reload     func() error
	handler    http.Handler
	ln         net.Listener
}

// allowedServer is the allowlist: empty lets every server in.
func (a *App) allowedServer() func(string) bool {
	list := a.Cfg.Federation.AllowedServers.Items()
	if len(list) == 0 {
		return func(string) bool { return true }
	}
	// Server names are case-insensitive (DNS names): compared in lower
	// case, as the outbound side does.
	set := map[string]bool{strings.ToLower(a.Cfg.ServerName): true}
	for _, s := range list {
		set[strings.ToLower(s)] = true
	}
	return func(s string) bool { return set[strings.ToLower(s)] }
}

// openFederation makes the outbound side (client, key store, the
// roomserver's way to other servers) before the roomserver starts.
func (a *App) openFederation(ctx context.Context) error {
	if !a.Cfg.Federation.Enabled {
		return nil
	}
	f := &federation{}
	var err error
	if f.client, err = client.New(client.Options{ServerName: a.Cfg.ServerName, Key: a.Key, Cfg: a.Cfg.Federation, Log: a.Log}); err != nil {
		return fmt.Errorf("federation client: %w", err)
	}
	self, err := keys.LoadIdentity(ctx, a.DB, a.Cfg.ServerName, a.Key)
	if err != nil {
		return err
	}
	f.store = keys.NewStore(a.DB, keys.StoreConfig{Self: self, Fetcher: f.client})
	f.keySrv = keys.NewServer(keys.ServerConfig{Self: self, Store: f.store, Allowed: a.allowedServer()})
	f.peers = federationapi.NewPeers(f.client.Fed(), f.store, a.Cfg.ServerName, a.Key, a.Log)
	a.keysFed.peers.Store(f.peers)
	if f.tls, f.reload, err = client.ServerTLS(a.Cfg.Federation); err != nil {
		return fmt.Errorf("federation TLS: %w", err)
	}
	a.fed = f
	return nil
}

// startFederation starts the outbound queues and builds the federation
// listener's routes, once the roomserver and the sync engine run.
func (a *App) startFederation(ctx context.Context) error {
	f := a.fed
	if f == nil {
		return nil
	}
	var err error
	// With an allowlist the partners are few and known: a site back from
	// an outage is tried again within minutes, not an hour.
	retryMax := time.Hour
	if len(a.Cfg.Federation.AllowedServers.Items()) > 0 {
		retryMax = 5 * time.Minute
	}
	f.queues, err = outbound.New(ctx, outbound.Options{ServerName: a.Cfg.ServerName, DB: a.DB, Bus: a.Bus, Rooms: a.Rooms,
		Sender: f.client.Fed(), Refused: func(err error) bool { return errors.Is(err, client.ErrNotAllowed) }, RetryMax: retryMax})
	if err != nil {
		return err
	}
	if err := f.queues.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	a.closers = append(a.closers, f.queues.Close)
	a.keysFed.queues.Store(f.queues)
	fwd := &federationapi.EDUForwarder{ServerName: a.Cfg.ServerName, Rooms: a.Rooms, Queue: f.queues, Presence: a.Sync, Log: a.Log}
	stopFwd, err := fwd.Start(context.WithoutCancel(ctx), a.Bus, syncapi.TopicTyping, syncapi.TopicReceipts)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, stopFwd)
	if err := a.startDeviceListForwarder(ctx); err != nil {
		return err
	}
	if a.Cfg.Presence.Enabled {
		stopPresence, err := fwd.StartPresence(context.WithoutCancel(ctx), a.Bus, syncapi.TopicPresence, roomserver.Topic)
		if err != nil {
			return err
		}
		a.closers = append(a.closers, stopPresence)
	}
	api := &federationapi.API{ServerName: a.Cfg.ServerName, Key: a.Key, Rooms: a.Rooms, Users: a.Users, Ephemeral: a.Sync,
		Verifier: f.store, Log: a.Log}
	api.Directory = a.Rooms
	if a.media != nil {
		api.Media = a.media
	}
	if a.Keys != nil && f.remoteKeys != nil {
		api.Keys, api.DeviceLists = a.Keys, f.remoteKeys
	}
	if a.Keys != nil {
		api.ToDevice, api.KeyClaims = a.Keys, a.Keys
	}
	hist := history.New(a.Rooms, a.Cfg.ServerName)
	r := chi.NewRouter()
	r.Use(httpx.AccessLog(a.Log, metrics.Observe))
	f.keySrv.Routes(r)
	r.Route("/_matrix/federation", func(r chi.Router) {
		api.PublicRoutes(r)
		r.Group(func(r chi.Router) {
			r.Use(keys.Authenticate(f.store, a.Cfg.ServerName, a.allowedServer()))
			// A server that talks to us is up again: end its backoff wait.
			r.Use(func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					f.queues.Retry(origin.From(r.Context()))
					next.ServeHTTP(w, r)
				})
			})
			api.Routes(r)
			hist.Routes(r)
		})
	})
	r.NotFound(httpx.Handle(func(w http.ResponseWriter, r *http.Request) error {
		return merr.Unrecognized("Unrecognized request")
	}))
	r.MethodNotAllowed(httpx.Handle(func(w http.ResponseWriter, r *http.Request) error {
		return merr.Unrecognized("Unrecognized request")
	}))
	f.handler = r
	return nil
}

// listenFederation opens the federation listener.
func (a *App) listenFederation() error {
	if a.fed == nil {
		return nil
	}
	l, err := net.Listen("tcp", a.Cfg.Federation.Listen)
	if err != nil {
		return fmt.Errorf("federation.listen %s: %w", a.Cfg.Federation.Listen, err)
	}
	a.fed.ln = l
	return nil
}

// serveFederation serves the federation API over TLS until ctx ends; the
// certificate is read again on SIGHUP.
func (a *App) serveFederation(ctx context.Context, base context.Context, errc chan<- error) func(context.Context) {
	f := a.fed
	if f == nil || f.ln == nil {
		// Nothing to reload: SIGHUP (systemctl reload) must not stop the
		// server as its default action would.
		signal.Ignore(syscall.SIGHUP)
		return func(context.Context) {}
	}
	srv := &http.Server{
		BaseContext:       func(net.Listener) context.Context { return base },
		Handler:           f.handler,
		TLSConfig:         f.tls,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	go client.OnSIGHUP(ctx, a.Log, func() error { return errors.Join(f.reload(), f.client.Reload()) })
	go func() { errc <- srv.Serve(tls.NewListener(f.ln, f.tls)) }()
	return func(sctx context.Context) { _ = srv.Shutdown(sctx) }
}

// mediaFetcher is the media repository's way to other servers' media
// (nil when federation is off).
func (a *App) mediaFetcher() mediaapi.RemoteFetcher {
	if a.fed == nil {
		return nil
	}
	return federationapi.NewMediaFetcher(a.fed.client.RoundTripper(), a.Cfg.ServerName, a.Key)
}

// fetcher and roomFederation give the roomserver its way to other servers
// (nil interfaces when federation is off).
func (a *App) fetcher() roomserver.EventFetcher {
	if a.fed == nil {
		return nil
	}
	return a.fed.peers
}

func (a *App) roomFederation() roomserver.Federation {
	if a.fed == nil {
		return nil
	}
	return a.fed.peers
}

// backfiller lets /messages fetch older history from other servers
// (federation on).
func (a *App) backfiller(rs *roomserver.Service) syncapi.Backfiller {
	if a.fed == nil {
		return nil
	}
	return rs
}
