package server

import (
	"strings"

	"github.com/haven-chat/haven/clientapi/signin"
	"github.com/haven-chat/haven/userapi/oauth"
)

// openOAuth makes the OAuth 2.0 API when it is on (config.OAuthOn); the
// sign-in page gets it as the page's OAuth (nil, not a typed nil, when off).
func (a *App) openOAuth() signin.OAuth {
	if !a.Cfg.OAuthOn() {
		return nil
	}
	a.OAuth = oauth.New(a.DB, a.Users, oauth.Options{})
	return a.OAuth
}

// accountURL is the account page's absolute URL for the m.oauth UIA stage
// of OAuth sessions; "" when the OAuth 2.0 API is off.
func (a *App) accountURL() string {
	if !a.Cfg.OAuthOn() {
		return ""
	}
	return strings.TrimSuffix(a.Cfg.OAuthIssuer(), "/") + signin.PathAccount
}
