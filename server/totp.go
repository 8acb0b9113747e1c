package server

import (
	"crypto/sha256"

	"github.com/haven-chat/haven/clientapi"
	"github.com/haven-chat/haven/clientapi/signin"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/totp"
)

// openTOTP makes the TOTP service and the two-factor policy (auth.totp);
// the policy is nil when two-factor sign-in is off.
func (a *App) openTOTP() userapi.SecondFactor {
	a.TOTP = totp.New(a.DB, totp.Options{Issuer: a.Cfg.ServerName, EncryptionKey: a.Cfg.Auth.TOTPEncryptionKey})
	if !a.Cfg.Auth.TOTPEnabled() {
		return nil
	}
	return a.totpPolicy()
}

func (a *App) totpPolicy() totp.Policy {
	return totp.Policy{Mode: a.Cfg.Auth.TOTP, Admins: a.Cfg.Auth.TOTPAdmins, Svc: a.TOTP}
}

// signInAreas are the sign-in page (when two-factor sign-in is on or
// company identity providers are set) and the admin reset of a user's
// second factor.
func (a *App) signInAreas(api *clientapi.API) ([]func() []clientapi.Route, error) {
	areas := []func() []clientapi.Route{api.AdminTOTPArea(a.TOTP)}
	if !a.Cfg.Auth.TOTPEnabled() && len(a.Cfg.OIDC.Providers) == 0 {
		return areas, nil
	}
	var upstreams []*signin.Upstream
	for _, c := range a.Cfg.OIDC.Providers {
		u, err := signin.NewUpstream(c, a.Cfg.PublicBaseURL)
		if err != nil {
			return nil, err
		}
		upstreams = append(upstreams, u)
	}
	// The cookie key is derived from the signing key, so that every Haven
	// process of a server has the same without another secret to share.
	key := sha256.Sum256(append([]byte("haven sign-in cookies\x00"), a.Key.Private.Seed()...))
	page := signin.New(signin.Options{
		ServerName: a.Cfg.ServerName, PublicBaseURL: a.Cfg.PublicBaseURL, ClientOrigins: a.Cfg.Auth.SSOClientOrigins.Items(),
		CookieKey: key[:], Users: a.Users, TOTP: a.TOTP, Policy: a.totpPolicy(), Audit: a.Audit, ClientAddr: clientapi.ClientAddr,
		Upstreams: upstreams, NoSecondFactor: !a.Cfg.Auth.TOTPEnabled(), OAuth: a.openOAuth(),
	})
	areas = append(areas, api.SignInArea(page))
	if a.OAuth != nil {
		areas = append(areas, api.OAuthArea(a.OAuth, page))
	}
	return areas, nil
}
