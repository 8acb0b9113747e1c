// Package signin is Haven's own sign-in page: server-rendered HTML with no
// external assets, where a person gives the username, the password and,
// when the account has or needs one, a TOTP code. It is how a second factor
// reaches clients that only know m.login.password, and it is the front of
// the OAuth 2.0 API (a request to sign in carries a purpose: a client's
// redirectUrl, a UIA session, or an OAuth authorization request).
//
// Uses, all under /_haven/ except the Matrix entry points:
//
//   - m.login.sso: GET /_matrix/client/v3/login/sso/redirect?redirectUrl=
//     leads to the page; on success the page makes a login token
//     (userapi.IssueLoginToken, two minutes, single use) and sends the
//     browser to redirectUrl with loginToken=, which the client exchanges
//     through POST /login with m.login.token. A redirectUrl whose origin is
//     not in auth.sso_client_origins is named on a confirmation page first,
//     so that a link to the page with someone else's site cannot take the
//     token unseen.
//
//   - the m.login.sso UIA stage: GET /_matrix/client/v3/auth/m.login.sso/
//     fallback/web?session= leads to the page for the session's user; on
//     success the stage is marked completed in the session and the page
//     tells the client (window.onAuthDone or postMessage "authDone").
//
//   - the account page (/_haven/account): the user sets up TOTP (QR code as
//     inline SVG, and the secret), or makes new recovery codes.
//
//   - company sign-in (oidc.go): with oidc.providers, each provider is a
//     button on the page and an identity provider of m.login.sso
//     (GET /_matrix/client/v3/login/sso/redirect/{idpId} goes straight to
//     it). /_haven/signin/oidc/{id} starts the authorization code flow
//     (PKCE S256, state, nonce in a signed SameSite=Lax cookie limited to
//     the callback path); /_haven/oidc/callback checks the state,
//     exchanges the code, verifies the ID token (go-oidc: JWKS signature,
//     issuer, audience, expiry; the nonce here), fills missing claims from
//     userinfo, and asks userapi.SignInUpstream for the account. The
//     second factor then applies as after a password (PathCode), unless
//     auth.totp is off. Failures are HTML pages; causes go to the log.
//
//   - the OAuth 2.0 API (oauth.go): GET /_haven/oauth2/authorize has the
//     request checked by userapi/oauth, seals it (HMAC with the cookie key,
//     30 minutes) and carries it through the page as the purpose "oauth"
//     (a hidden field; in the company sign-in's cookie); after the full
//     sign-in (password or provider, then the second factor per policy)
//     the page asks for consent, and POST /_haven/oauth2/consent issues
//     the code and redirects to the client (or sends access_denied).
//
//   - account management (account.go): the account page also lists the
//     user's devices with a Sign out button (POST /_haven/account/devices)
//     and honours ?action= and ?device_id= from clients, kept in a cookie
//     across a sign-in; with ?action=org.matrix.cross_signing_reset it shows
//     the Approve button (POST /_haven/account/cross_signing_reset), the
//     m.oauth UIA stage of OAuth sessions (userapi/uia_oauth.go).
//
// A user who must use a second factor but has none set up is taken through
// the set-up right after the password, before the sign-in finishes.
//
// Protection: every page is sent with a Content-Security-Policy that allows
// only its own nonce'd style and script, no framing and no external
// resources; forms carry a CSRF token that is an HMAC of a random cookie
// (double submit); the signed-in state is a short-lived HMAC-signed cookie
// (HttpOnly, SameSite=Strict, Secure when public_baseurl is https).
// Passwords go through the same per-account backoff as m.login.password
// and codes through the TOTP attempt limit; every success and failure is
// audited.
//
// Tables: none (userapi and userapi/totp own them). Goroutines: none.
// Locks: Upstream.mu guards a provider's discovered configuration (held
// during discovery, which is bounded by a 15 s timeout).
package signin
