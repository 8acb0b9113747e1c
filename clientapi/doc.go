// Package clientapi serves the Matrix Client-Server API: one route table
// (method, path, handler, auth level, rate-limit class) assembled from the
// areas (versions, accounts, rooms, sync, ...), the auth middleware, and thin
// handlers that decode with a size limit, call a service and encode. Errors
// become Matrix errors in internal/httpx only.
//
// The services are reached through small interfaces declared beside the
// handlers that use them (roomService in rooms.go, syncService in sync.go).
// Some areas take their service as an argument instead of a field of API:
// SearchArea (search.go: /search, /user_directory/search) and
// RelationsArea (relations.go: /relations, /threads), both served by the
// sync engine.
//
// /publicRooms (directory.go) lists this server's directory, or with
// server= another server's through API.RemoteDirectory (federation on;
// a user's token needed, since it costs a request to that server).
//
// Application services (appservice.go): the auth middleware resolves an
// application service's as_token through API.AppServices before the user
// API's tokens — the service's sender, or the user_id (and device_id) it
// asserts — and marks the request's Device with the service's ID.
// /register and /login (auth level authAppService) take a service's token
// as the service itself, for m.login.application_service; the ping, the
// third-party lookups and the services' directory listing are
// AppServiceArea. The rate limits skip a service's sender and services
// registered with rate_limited: false.
//
// Closed by default: profile look-ups (profile.go) need a token unless
// profiles.require_token is off, and with profiles.limit_to_shared_rooms
// answer only users the roomserver says may see the profile
// (API.ProfileVisibility); the legacy unauthenticated media routes answer
// 404 M_NOT_FOUND unless media.legacy_unauthenticated (media.go).
//
// Email (threepid.go, when the user API has a mailer): requestToken for a
// password reset and for adding an address, Haven's confirmation page at
// /_haven/email/submit_token (GET shows a confirm button, a form POST or
// a client's JSON POST validates), /account/3pid/add with UIA, the list
// and delete; POST /account/password without a token is a password reset
// with the m.login.email.identity stage.
//
// Every route's body is limited to max_request_bytes, except routes marked
// OwnBody (the media uploads in media.go), which stream their body to the
// media service and stop it at media.max_upload_bytes themselves.
//
// An expired access token (a session with a refresh token) is refused
// except on routes marked ExpiredOK (logout). /preview_url answers 404
// M_UNRECOGNIZED while media.url_previews is off.
//
// The admin API (/_synapse/admin/, Synapse's paths, for synadm and
// synapse-admin; docs/admin.md) is routes with auth level authAdmin:
// accounts and devices in admin_users.go (through the user API; a
// deactivation takes deactivateAccount, the same way as the user's own,
// leaving the rooms through API.Leaver), registration tokens in
// admin_regtokens.go (adminapi/regtokens), the audit search in
// admin_audit.go. Every route under /_synapse/admin/, whoever adds it, is
// audited by the route wrapper (audited, admin_audit.go) into API.Audit:
// the action "admin." + the route's AuditOp (or its method and path), the
// caller, the user or room of the path, the address and the outcome, also
// when the call is refused before its handler (no token, not an admin).
//
// The client address of every request is derived once, in Router, by
// internal/clientip with the config's trusted_proxies (X-Forwarded-For is
// believed only from them); clientAddr reads it for the rate limits, the
// user API (login slowdown, last-seen addresses, audit) and the logs.
// Attempts the login and registration limits refuse are recorded through
// API.LoginAudit (audit.LoginRefused, with the address).
//
// Two-factor sign-in (sso.go, admin_totp.go): SignInArea routes the HTML
// sign-in page of clientapi/signin, with the m.login.sso redirect and the
// UIA fallback; GET /login lists m.login.sso (with identity_providers, the
// company OpenID Connect providers, which /login/sso/redirect/{idpId}
// starts directly) and m.login.token when auth.totp is not off or
// oidc.providers are set, and drops m.login.password under required; POST
// /login takes m.login.token; DELETE /_synapse/admin/v1/users/{userId}/totp
// resets a user's second factor.
//
// OAuth 2.0 API (oauth.go, docs/oauth.md): OAuthArea, added when
// config.OAuthOn, serves GET /_matrix/client/v1/auth_metadata (and the
// unstable msc2965 paths), dynamic client registration, the token and
// revocation endpoints (form bodies in, OAuth JSON errors out, written by
// the handler, not by httpx's Matrix error mapper), and routes the
// authorization endpoint and the consent page of clientapi/signin. The
// grants themselves are userapi/oauth's.
//
// Tables: none. Goroutines: none. Locks: the rate limiter's mutex, a leaf.
package clientapi
