// Package oauth is the OAuth 2.0 API of the Matrix spec (v1.15, the
// MSC3861 family): dynamic client registration (RFC 7591 as the spec
// restricts it), the authorization code grant with PKCE (S256 only), the
// refresh token grant, token revocation (RFC 7009) and the Matrix scopes
// (urn:matrix:client:api:* and urn:matrix:client:device:<id>, also in
// their unstable org.matrix.msc2967 forms).
//
// The package holds the rules and the state of the protocol; it has no
// login UI and no token store of its own. People sign in on Haven's sign-in
// page (clientapi/signin), which asks this package to check an
// authorization request and, after the sign-in and the consent, to issue a
// code. The tokens are ordinary device tokens of userapi: exchanging a code
// opens the scope's device with a refresh token (userapi.LoginOAuth), the
// refresh token grant is userapi.Refresh (rotation included), and revoking
// an access or refresh token deletes the device.
//
// Errors are *Error values carrying the OAuth error code; the HTTP layer
// (clientapi/oauth.go) writes them as the OAuth JSON error body or as the
// error parameters of a redirect.
//
// Tables owned (migration 0035): oauth_clients, oauth_codes (SHA-256 of
// each code, single use, ten minutes). Which client each OAuth device
// belongs to is userapi's oauth_sessions (userapi.LoginOAuth, OAuthSession),
// kept with the devices so that deleting a device ends its session row.
// Goroutines: none. Locks: none.
package oauth
