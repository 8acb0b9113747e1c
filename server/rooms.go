package server

import (
	"context"

	"github.com/haven-chat/haven/clientapi"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi"
	"github.com/haven-chat/haven/userapi"
)

// accountDataAdapter gives the sync engine the user API's account data in its own types.
type accountDataAdapter struct{ *userapi.Service }

func (a accountDataAdapter) AccountDataSince(ctx context.Context, userID string, after, upto int64) ([]syncapi.AccountDataItem, error) {
	items, err := a.Service.AccountDataSince(ctx, userID, after, upto)
	if err != nil {
		return nil, err
	}
	out := make([]syncapi.AccountDataItem, len(items))
	for i, it := range items {
		out[i] = syncapi.AccountDataItem{RoomID: it.RoomID, Type: it.Type, Content: it.Content}
	}
	return out, nil
}

// wireRooms starts the roomserver and the sync engine and adds their routes.
func (a *App) wireRooms(ctx context.Context, api *clientapi.API, users *userapi.Service) error {
	rs, err := roomserver.New(ctx, a.DB, a.Bus, users, a.accountChecker(users), roomserver.Options{
		ServerName: a.Cfg.ServerName, Key: a.Key, DefaultVersion: a.Cfg.DefaultRoomVersion, Aliases: a.aliasNamespaces(), Direct: users,
		Fetcher: a.fetcher(), Federation: a.roomFederation(),
		Spaces: a.spaceFetcher(),
	})
	if err != nil {
		return err
	}
	a.closers = append(a.closers, rs.Close)
	ps, err := a.wirePush(ctx, rs, users)
	if err != nil {
		return err
	}
	a.devices.push.Store(ps)
	ss, err := syncapi.New(ctx, a.DB, a.Bus, rs, accountDataAdapter{users}, syncapi.Options{PresenceEnabled: a.Cfg.Presence.Enabled, Keys: a.keySource(), Push: ps, Backfill: a.backfiller(rs)})
	if err != nil {
		return err
	}
	api.Areas = append(api.Areas, api.PushArea(ps, ss))
	a.closers = append(a.closers, ss.Close)
	a.Rooms, a.Sync = rs, ss
	api.Rooms, api.Sync, api.Directory, api.Peeks = rs, ss, rs, ss
	api.Filters, api.AccountData, api.Tags = users, users, users
	api.Areas = append(api.Areas, api.RoomAreas()...)
	return nil
}
