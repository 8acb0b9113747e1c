package server

import (
	"context"

	"github.com/haven-chat/haven/appservice"
	"github.com/haven-chat/haven/clientapi"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/userapi"
)

// openAppServiceQueries reads the application services' registrations
// (cmd/haven has checked them already; a caller of New gets the same
// problems as an error) and prepares the queries the user API and the
// roomserver ask of them.
func (a *App) openAppServiceQueries() error {
	regs, probs := appservice.Load(a.Cfg.AppServices.Items(), a.Cfg.ServerName)
	if len(probs) > 0 {
		return probs
	}
	a.asQueries = appservice.NewQueries(appservice.NewRegistry(regs), appservice.QueryOptions{ServerName: a.Cfg.ServerName})
	return nil
}

// haveAppServices tells whether any application service is configured.
func (a *App) haveAppServices() bool {
	return a.asQueries != nil && len(a.asQueries.Registry().All()) > 0
}

// userNamespaces is what the user API asks of the services (nil without any).
func (a *App) userNamespaces() userapi.AppServices {
	if !a.haveAppServices() {
		return nil
	}
	return a.asQueries
}

// aliasNamespaces is what the roomserver asks of the services (nil without any).
func (a *App) aliasNamespaces() roomserver.AliasNamespaces {
	if !a.haveAppServices() {
		return nil
	}
	return a.asQueries
}

// accountChecker is the roomserver's check that an invitee exists: an
// unknown user of a service's namespace is asked of the service first.
func (a *App) accountChecker(users *userapi.Service) roomserver.AccountChecker {
	if !a.haveAppServices() {
		return users
	}
	return askingAccounts{users, a.asQueries}
}

type askingAccounts struct {
	users *userapi.Service
	q     *appservice.Queries
}

func (c askingAccounts) IsGuest(ctx context.Context, userID string) (bool, error) {
	return c.users.IsGuest(ctx, userID)
}

func (c askingAccounts) AccountExists(ctx context.Context, userID string) (bool, error) {
	ok, err := c.users.AccountExists(ctx, userID)
	if err != nil || ok || !c.q.QueryUser(ctx, userID) {
		return ok, err
	}
	return c.users.AccountExists(ctx, userID)
}

// wireAppServices starts the transaction feed and senders and adds the
// routes of application services (the third-party lookups answer {} and
// [] without any).
func (a *App) wireAppServices(ctx context.Context, api *clientapi.API) error {
	if a.haveAppServices() {
		svc, err := appservice.New(ctx, a.asQueries, appservice.Deps{DB: a.DB, Bus: a.Bus, Users: a.Users, Rooms: a.Rooms, Keys: a.Keys},
			appservice.Options{ServerName: a.Cfg.ServerName})
		if err != nil {
			return err
		}
		a.closers = append(a.closers, svc.Close)
		api.AppServices = svc
	}
	api.Areas = append(api.Areas, api.AppServiceArea(a.asQueries))
	return nil
}
