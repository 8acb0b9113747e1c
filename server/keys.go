package server

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/haven-chat/haven/federationapi"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi"
	"github.com/haven-chat/haven/userapi/keys"
	"github.com/haven-chat/haven/userapi/push"
)

// openKeys starts the key service (end-to-end encryption, to-device
// messages, device lists). It comes before the user API, which tells it of
// added and deleted devices.
func (a *App) openKeys(ctx context.Context) error {
	opts := keys.Options{ServerName: a.Cfg.ServerName}
	if a.Cfg.Federation.Enabled {
		a.keysFed.allowed = a.allowedServer()
		opts.ToDeviceOut, opts.Claimer = &a.keysFed, &a.keysFed
	}
	svc, err := keys.New(ctx, a.DB, a.Bus, opts)
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	a.closers = append(a.closers, svc.Close)
	a.Keys = svc
	a.devices.keys = svc
	return nil
}

// keySource is the key service as the sync engine sees it (nil when absent).
func (a *App) keySource() syncapi.KeySource {
	if a.Keys == nil {
		return nil
	}
	return a.Keys
}

// keysAPI joins what the key routes need: the key service, and the sync
// engine for /keys/changes (it owns sync tokens and room membership).
type keysAPI struct {
	*keys.Service
	sync *syncapi.Service
	// remote answers about other servers' users (nil without federation).
	remote *keys.Remote
}

func (k keysAPI) Query(ctx context.Context, requester string, want map[string][]string, timeout time.Duration) (*keys.QueryResponse, error) {
	if k.remote != nil {
		return k.remote.Query(ctx, requester, want, timeout)
	}
	return k.Service.Query(ctx, requester, want)
}

// openRemoteKeys starts the device lists of other servers' users (with
// federation on), once the roomserver runs.
func (a *App) openRemoteKeys() error {
	if a.fed == nil || a.Rooms == nil || a.Keys == nil {
		return nil
	}
	r := keys.NewRemote(a.Keys, a.fed.peers, a.Rooms, a.Log)
	if err := r.Start(a.Bus, roomserver.Topic); err != nil {
		return err
	}
	a.closers = append(a.closers, r.Close)
	a.fed.remoteKeys = r
	return nil
}

func (k keysAPI) KeyChanges(ctx context.Context, userID, from, to string) ([]string, []string, error) {
	return k.sync.KeyChanges(ctx, userID, from, to)
}

// deviceObservers is what the user API tells of added and deleted devices:
// the key service (device lists, keys, to-device queues) and, once it runs,
// the push service (pushers of deleted devices). The push service starts
// after the user API, which it reads push rules from, hence the pointer.
type deviceObservers struct {
	keys *keys.Service
	push atomic.Pointer[push.Service]
}

func (d *deviceObservers) DeviceRenamed(ctx context.Context, userID, deviceID string) {
	if d.keys != nil {
		d.keys.DeviceRenamed(ctx, userID, deviceID)
	}
}

func (d *deviceObservers) DevicesChanged(ctx context.Context, userID string, added, deleted []string) {
	if d.keys != nil {
		d.keys.DevicesChanged(ctx, userID, added, deleted)
	}
	if p := d.push.Load(); p != nil && len(deleted) > 0 {
		if err := p.DevicesDeleted(ctx, userID, deleted); err != nil {
			logging.From(ctx).WithError(err).WithField("user_id", userID).Error("push: delete the pushers of deleted devices")
		}
	}
}

// remoteKeys is the cache of other servers' users' device lists (nil
// without federation).
func (a *App) remoteKeys() *keys.Remote {
	if a.fed == nil {
		return nil
	}
	return a.fed.remoteKeys
}

// startDeviceListForwarder sends our users' device list changes to the
// servers sharing a room with them.
func (a *App) startDeviceListForwarder(ctx context.Context) error {
	if a.Keys == nil || a.Rooms == nil {
		return nil
	}
	fwd := &federationapi.DeviceListForwarder{ServerName: a.Cfg.ServerName, Keys: a.Keys, Rooms: a.Rooms, Queue: a.fed.queues, Log: a.Log}
	stop, err := fwd.Start(context.WithoutCancel(ctx), a.Bus, keys.TopicDeviceLists)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, stop)
	return nil
}
