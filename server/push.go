package server

import (
	"context"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/push"
)

// wirePush starts push rule evaluation, notification counts and push
// delivery. It runs before the sync engine, which calls it for every event.
func (a *App) wirePush(ctx context.Context, rs *roomserver.Service, users *userapi.Service) (*push.Service, error) {
	ps, err := push.New(ctx, a.DB, a.Bus, rs, users, push.Options{ServerName: a.Cfg.ServerName,
		GatewayAllowed: prefixes(a.Cfg.Push.GatewayAllowedRanges),
		Mail:           a.pushMail(), EmailDelay: a.Cfg.Email.Delay(), ClientURL: a.Cfg.Email.ClientURL})
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, ps.Close)
	a.roomData = append(a.roomData, ps)
	return ps, nil
}
