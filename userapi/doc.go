// Package userapi owns the people side of Haven: accounts, devices and their
// access tokens, password hashing, user-interactive authentication (UIA),
// profiles, account data (a sync stream), filters and push rules.
//
// Tables owned: accounts, devices, profiles, account_data, filters,
// push_rules, uia_sessions, registration_nonces, openid_tokens,
// login_addresses (migration 0027), login_failures (0038), login_tokens
// (0031), user_threepids and threepid_sessions (0032), oidc_links (0034),
// uia_approvals (0040), oauth_sessions (0035: which OAuth client a device
// was issued to, written by LoginOAuth and deleted with the device; the
// m.oauth UIA stage reads it); it also deletes a removed
// device's rows of to_device (owned by userapi/keys). After a device is
// added or deleted it calls Options.DeviceLists (userapi/keys), which
// records the change on the device list stream and drops the deleted
// devices' keys.
//
// Access tokens are 32 random bytes; only their SHA-256 is stored
// (devices.token_hash). Authenticate answers from an in-memory cache (token
// hash → Device) so that an idle /sync costs no database query; the cache is
// invalidated on logout, device deletion, password change and deactivation,
// in this process at once and in other processes through the bus topic
// InvalidateTopic.
//
// Application services (Options.AppServices, the appservice package): a
// user ID in a service's exclusive namespace can be registered only by that
// service (M_EXCLUSIVE for everyone else, also on /register/available); the
// service's accounts have no password and it logs in as them without one;
// a profile lookup of an unknown user asks the services first. A request
// made with a service's token carries its ID in Device.AppService.
//
// Guests (guests.go, registration.guests): accounts.is_guest marks an
// account made with /register?kind=guest (numeric localpart, no password,
// no display name); its devices carry Device.IsGuest, which the client
// API uses to allow only the spec's guest endpoints. UpgradeGuest turns one
// into a full account. The ignore list (ignored.go) of each user is cached
// for the sync engine and push evaluation.
//
// Refresh tokens (refresh.go, spec v1.3, migration 0014): a login or
// registration with "refresh_token": true gets a refresh token
// (devices.refresh_hash, a SHA-256 like the access token's) and an access
// token that expires after Options.AccessTokenLifetime
// (devices.token_expires_ts; NULL for sessions that did not ask, whose
// tokens never expire). An expired access token is 401 M_UNKNOWN_TOKEN
// with soft_logout true, except for logging out (AllowExpired, as on
// Synapse). Refresh replaces both tokens of the device; the
// refresh token used stays valid (devices.old_refresh_hash) until the new
// access token or refresh token is first used, so a client that lost the
// answer can refresh again. A new login on the device, logout and device
// deletion end them.
//
// The admin API's view of accounts (admin.go): ListUsers and User read
// accounts, profiles and the devices' last-seen times; SetAdmin drops the
// user's cached tokens (Device.IsAdmin is cached); accounts.user_type and
// accounts.erased (migration 0025) are set by SetUserType and Erase;
// Reactivate lets a deactivated account in again; LoginAs gives an admin a
// device of another user. Registration tokens are kept by
// Options.RegistrationTokens (adminapi/regtokens): the UIA stage reserves a
// use and the client API ends it with FinishRegistrationToken.
//
// Two-factor sign-in (logintoken.go, secondfactor.go; the secrets are kept
// by userapi/totp): Options.SecondFactor is the policy. Login refuses
// m.login.password, after checking the password, for an account that must
// give a second factor; CheckUIA replaces the password flow of sensitive
// operations by the m.login.sso stage for such accounts, which the sign-in
// page (clientapi/signin) completes with CompleteUIAStage. The page checks
// passwords with CheckCredentials and hands a sign-in to clients with
// IssueLoginToken: a single-use token (login_tokens, SHA-256 only, two
// minutes, migration 0031) that LoginWithToken exchanges (m.login.token).
//
// OAuth 2.0 sessions (oauthsession.go; the protocol is userapi/oauth):
// LoginOAuth opens the device named by an authorization code's scope with a
// refresh token, its refresh is Refresh, and DeviceOfToken finds the device
// of an access or refresh token for revocation.
//
// Company directory (ldap.go; the LDAP client is userapi/ldap):
// Options.Directory, when set, checks every password (m.login.password,
// CheckCredentials, the UIA password stage) against the directory, behind
// the same per-account backoff: the directory's localpart attribute names
// the account, made at the first sign-in (no local password) when
// CreateAccounts; accounts the directory does not know use their local
// password only with FallbackLocalPasswords. An unavailable directory is
// 503 M_UNKNOWN (audited as login.unavailable), never counted as a failure.
//
// Company identity providers (upstream.go; the OpenID Connect flow is
// clientapi/signin): SignInUpstream maps a verified identity to an
// account through oidc_links (provider id + subject → user ID), so that a
// rename at the provider keeps the account; at the first sign-in the
// localpart claim names the account, made (no local password) when the
// provider may create accounts, linked when it exists and the provider may
// link existing users and no other subject of the provider holds it.
// The provider's email claim becomes the account's verified email threepid
// (upstream_email.go; oidc_links.email remembers it, so that a changed
// address replaces the provider's previous one only).
//
// After a room upgrade, AddDirectRoom puts the new room beside the old one
// in the user's m.direct (called by the roomserver).
//
// Email (threepid.go, with Options.Mail): RequestEmailToken sends a link
// to Haven's confirmation page and a code (only the code's SHA-256 is
// stored, threepid_sessions, one hour; per-address limit in memory,
// emailLimiter.mu, a leaf); SubmitEmailToken validates the session;
// AddThreePID binds the address (user_threepids, one owner per address);
// the m.login.email.identity UIA stage and EmailIdentityUser reset a
// forgotten password with a validated session, once. Deactivation deletes
// the user's addresses.
//
// A UIA session (uia_sessions, 15 minutes) keeps its operation, the stages
// completed and the parameters of its first request that gave some
// (passwords as their hashes): the spec has the whole session use them.
// An account linked to a company provider without a Haven password is
// offered m.login.sso instead of the password (Options.UpstreamUIA).
// A device of the OAuth 2.0 API is offered the m.oauth stage (MSC4312,
// uia_oauth.go) for the cross-signing reset: an approval on the account
// page (uia_approvals, ten minutes, single use) lets its retry through.
//
// Password guessing (knownaddrs.go, backoff.go): failed password checks
// slow an account down (a doubling wait after three failures), counted
// together for networks the account has not signed in from and separately
// for each network it has (login_addresses: the newest 20 per account, 90
// days), so the owner keeps signing in during a guessing run. The counters
// are rows of login_failures (migration 0038), shared by every process of
// a scale-out. Sign-ins,
// failures and refusals go to Options.Audit (internal/audit). New
// passwords meet Options.PasswordPolicy (policy.go: minimum length, the
// embedded common_passwords.txt and its variants) through CheckNewPassword,
// which HashNewPassword calls; shared-secret registration skips it.
//
// Passwords are hashed with bcrypt over base64(SHA-256(password)) (see
// password.go), so passwords longer than bcrypt's 72-byte input limit keep
// all their strength.
//
// Account data is a stream: positions come from one stream.Sequencer,
// account_data.pos is written in the same transaction as the content, and
// after the commit {"user_id","room_id","type","pos"} is published on the bus
// topic AccountDataTopic in position order. Push rule changes are published
// on the same stream as global account data of type m.push_rules. The
// rules are kept in memory per user, with their compiled form for
// evaluation (CompiledPushRules, built once per version of the rules);
// evaluation, counts, notifications and pushers are in userapi/push.
//
// Metrics (stats.go): CountUsers counts accounts and the users with a
// device seen in the last day and month (devices.last_seen_ts); the
// server's housekeeping calls it once a minute.
//
// Goroutines: one, started by Start and stopped by Close, that writes
// devices.last_seen_ts/ip every SeenFlushInterval; and the bus delivery of
// InvalidateTopic (NATS's goroutine).
//
// Lock order: the per-user keyed lock (userLocks), then the sequencer's
// locks, then the small mutexes of the caches (tokMu, seenMu, backoff.mu, which
// guards only the time of the last sweep).
// No lock is held while waiting for anything but the database.
//
// Purged rooms (purge_room.go): PurgeRoomData, called by adminapi/rooms
// after an admin purged a room, deletes the room's account data (tags
// included). Devices keep the User-Agent of their last request
// (useragent.go, devices.user_agent from migration 0037), for whois: set at
// sign-in and written with the last-seen batch (tokens.go, FlushSeen).
// A client's registration of an account that must use a second factor
// opens no session (secondfactor.go, withoutPasswordSession).
package userapi
