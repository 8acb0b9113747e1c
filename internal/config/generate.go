package config

// Template is the fully commented configuration printed by `haven generate-config`.
// Every key is shown with its default; each can also be set with the
// environment variable named beside it.
const Template = `# Haven configuration. Every key is optional; the value shown is the default.
# Each key can also be set by an environment variable, named beside it.
# Check a file with: haven check-config --config haven.yaml

# The domain in your users' IDs (@alice:example.com). It cannot change later.
# HAVEN_SERVER_NAME
server_name: localhost

# Address and port of the client API. Keep 127.0.0.1 behind a reverse proxy
# (nginx, HAProxy) that terminates TLS; use 0.0.0.0:8008 to listen everywhere.
# HAVEN_LISTEN
listen: 127.0.0.1:8008

# The URL clients reach this server at, announced in /.well-known/matrix/client.
# Empty: http://<listen>.
# HAVEN_PUBLIC_BASEURL
public_baseurl: ""

# Folder for the SQLite database, the embedded NATS and media.
# HAVEN_DATA_DIR
data_dir: ./haven-data

# Database. Empty or "sqlite": a SQLite file in data_dir.
#   sqlite:///var/lib/haven/haven.db      another SQLite file
#   postgres://haven:PASSWORD@db.internal:5432/haven?sslmode=require
# HAVEN_DATABASE
database: ""

# Connections in the PostgreSQL pool (and SQLite read connections, at most 8).
# A waiting /sync never holds one.
# HAVEN_DATABASE_POOL
database_pool: 20

# SQLite only: FULL survives power loss; NORMAL survives a crash of Haven
# itself and writes faster.
# HAVEN_SQLITE_SYNCHRONOUS
sqlite_synchronous: FULL

registration:
  # Anyone may create an account. When false, accounts come from admins,
  # "haven create-user" and shared-secret registration.
  # HAVEN_REGISTRATION_OPEN
  open: false
  # Enables /_synapse/admin/v1/register (nonce + HMAC), which admin tools
  # and test suites use. Use 16 or more random characters (a shorter one
  # works, with a warning at start); empty turns it off.
  # HAVEN_REGISTRATION_SHARED_SECRET
  shared_secret: ""
  # Guest accounts (POST /register?kind=guest): no password, only the
  # endpoints the spec opens to guests, only rooms that allow guests.
  # HAVEN_REGISTRATION_GUESTS
  guests: false
  # With open: true, registration needs a registration token, made by an
  # admin (POST /_synapse/admin/v1/registration_tokens/new).
  # HAVEN_REGISTRATION_REQUIRE_TOKEN
  require_token: false

admin_api:
  # POST /_synapse/admin/v1/users/{userId}/login: an admin gets an access
  # token of another user. Off by default.
  # HAVEN_ADMIN_API_LOGIN_AS_USER
  login_as_user: false

auth:
  # Two-factor sign-in (TOTP): off, optional or required. With optional or
  # required, people sign in on Haven's own page (username, password and a
  # code from an authenticator app) and clients get the result through
  # m.login.sso; accounts with a second factor cannot use a plain password.
  # HAVEN_AUTH_TOTP
  totp: off
  # With optional: server admins must use a second factor all the same.
  # HAVEN_AUTH_TOTP_REQUIRED_FOR_ADMINS
  totp_required_for_admins: true
  # Encrypts the TOTP secrets in the database (a long random string, for
  # example from "openssl rand -hex 32"; keep it out of database backups).
  # HAVEN_AUTH_TOTP_ENCRYPTION_KEY
  totp_encryption_key: ""
  # Web clients (scheme://host[:port]) that receive login tokens without a
  # confirmation page; others are named to the user, who confirms.
  # HAVEN_AUTH_SSO_CLIENT_ORIGINS
  sso_client_origins: []
  # The Matrix OAuth 2.0 API (what Element X signs in with): served with the
  # sign-in page (auth.totp not off, or oidc.providers set) when
  # public_baseurl is set. Clients register themselves; people sign in and
  # consent on Haven's page (docs/oauth.md).
  # HAVEN_AUTH_OAUTH
  oauth: true

ldap:
  # Check passwords against the company directory (OpenLDAP, Active
  # Directory): Haven finds the person with the service account below, then
  # signs in to the directory as them with the password typed
  # (docs/security.md, "Company directory").
  # HAVEN_LDAP_ENABLED
  enabled: false
  # ldaps://host:636, or ldap://host:389 with start_tls: true.
  # HAVEN_LDAP_URL
  url: ""
  # HAVEN_LDAP_START_TLS
  start_tls: false
  # PEM file of the directory's certificate authority (empty: the system's).
  # HAVEN_LDAP_CA_FILE
  ca_file: ""
  # Accept any certificate: for tests only.
  # HAVEN_LDAP_INSECURE_SKIP_VERIFY
  insecure_skip_verify: false
  # The service account that searches the directory.
  # HAVEN_LDAP_BIND_DN
  bind_dn: ""
  # HAVEN_LDAP_BIND_PASSWORD
  bind_password: ""
  # Where people are found, e.g. ou=people,dc=example,dc=com
  # HAVEN_LDAP_BASE_DN
  base_dn: ""
  # {username} is the name typed at sign-in, escaped. Active Directory:
  # (&(objectClass=user)(sAMAccountName={username}))
  # HAVEN_LDAP_USER_FILTER
  user_filter: "(&(objectClass=person)(uid={username}))"
  # Attributes for the Matrix localpart (AD: sAMAccountName), the display
  # name (AD: displayName) and the email address.
  # HAVEN_LDAP_LOCALPART_ATTRIBUTE
  localpart_attribute: uid
  # HAVEN_LDAP_DISPLAYNAME_ATTRIBUTE
  displayname_attribute: cn
  # HAVEN_LDAP_EMAIL_ATTRIBUTE
  email_attribute: mail
  # Make the Matrix account at the first sign-in (false: only people who
  # already have an account get in).
  # HAVEN_LDAP_CREATE_ACCOUNTS
  create_accounts: true
  # Set the display name from the directory at every sign-in.
  # HAVEN_LDAP_UPDATE_DISPLAY_NAME
  update_display_name: false
  # Accounts the directory does not know (a break-glass admin) sign in
  # with their Haven password; so do accounts with a Haven password while
  # the directory cannot be reached.
  # HAVEN_LDAP_FALLBACK_LOCAL_PASSWORDS
  fallback_local_passwords: false
  # HAVEN_LDAP_TIMEOUT
  timeout: 5s

oidc:
  # Sign-in through the company's identity providers with OpenID Connect
  # (Keycloak, Entra ID, Google, Dex ...): one button per provider on
  # Haven's sign-in page and in Element. Register
  # <public_baseurl>/_haven/oidc/callback at the provider
  # (docs/security.md, "Company sign-in (OpenID Connect)"). For example:
  #   providers:
  #     - id: keycloak
  #       name: Company account
  #       issuer: https://sso.example.com/realms/company
  #       client_id: haven
  #       client_secret: "..."
  #       localpart_claim: preferred_username
  #       create_accounts: true
  # File only (no environment variables).
  providers: []

nats:
  # Empty: embedded NATS JetStream in data_dir, with no network listener.
  # Otherwise the URL of a NATS server or cluster, e.g. nats://nats1:4222
  # HAVEN_NATS_URL
  url: ""

rate_limits:
  # HAVEN_RATE_LIMITS_ENABLED
  enabled: true
  # Login attempts per client address per minute.
  # HAVEN_RATE_LIMITS_LOGIN_PER_MINUTE
  login_per_minute: 10
  # Registrations per client address per minute.
  # HAVEN_RATE_LIMITS_REGISTER_PER_MINUTE
  register_per_minute: 10
  # Messages per user per second, with a burst.
  # HAVEN_RATE_LIMITS_MESSAGES_PER_SECOND
  messages_per_second: 10
  # HAVEN_RATE_LIMITS_MESSAGE_BURST
  message_burst: 50

# Reverse proxies (addresses or CIDR ranges) whose X-Forwarded-For header
# names the client, e.g. [127.0.0.1] for nginx on this machine. Rate limits,
# the login slowdown and the audit log use the client's address; from any
# other peer the header is ignored, since anyone can write it. Empty: every
# client connects directly. See docs/security.md.
# HAVEN_TRUSTED_PROXIES
trusted_proxies: []

password_policy:
  # Fewest characters of a new password (registration, password change,
  # admin reset, create-user).
  # HAVEN_PASSWORD_POLICY_MIN_LENGTH
  min_length: 10
  # Refuse common passwords (a built-in list) and their variants with
  # digits or symbols around them.
  # HAVEN_PASSWORD_POLICY_REFUSE_COMMON
  refuse_common: true

# bcrypt cost of password hashes. 12 takes about 250 ms a hash; lower it only
# to create many accounts quickly for load tests.
# HAVEN_PASSWORD_HASH_COST
password_hash_cost: 12

# Lifetime of an access token when the client asked for a refresh token at
# login or registration (it refreshes before then, with POST /refresh).
# Clients that do not ask keep access tokens that never expire. 1s to 168h.
# HAVEN_ACCESS_TOKEN_LIFETIME
access_token_lifetime: 5m

# Room version of new rooms (1 to 12).
# HAVEN_DEFAULT_ROOM_VERSION
default_room_version: "11"

# Largest request body accepted, in bytes (events are limited to 65536).
# HAVEN_MAX_REQUEST_BYTES
max_request_bytes: 1048576

logging:
  # text (for people) or json (for log collectors)
  # HAVEN_LOGGING_FORMAT
  format: text
  # debug, info, warn or error
  # HAVEN_LOGGING_LEVEL
  level: info

metrics:
  # Address of the Prometheus /metrics listener; empty turns it off.
  # Keep it off the public port, e.g. 127.0.0.1:9090.
  # HAVEN_METRICS_LISTEN
  listen: ""

audit:
  # Days the audit log (logins, failures, admin actions) is kept in the
  # database; older entries are deleted once a day. haven admin audit
  # searches it.
  # HAVEN_AUDIT_RETENTION_DAYS
  retention_days: 365

presence:
  # Share online/offline status between users who share a room.
  # HAVEN_PRESENCE_ENABLED
  enabled: true

turn:
  # URIs of the TURN server for voice and video calls, handed to clients by
  # /voip/turnServer, e.g. ["turn:turn.example.com:3478?transport=udp",
  # "turns:turn.example.com:5349?transport=tcp"]. In the environment:
  # comma-separated.
  # HAVEN_TURN_URIS
  uris: []
  # The TURN server's static-auth-secret (coturn: use-auth-secret). Clients
  # get credentials derived from it that expire; empty: no TURN server is
  # offered.
  # HAVEN_TURN_SHARED_SECRET
  shared_secret: ""
  # How long handed-out TURN credentials stay valid.
  # HAVEN_TURN_USER_LIFETIME
  user_lifetime: 1h

backup:
  # Folder of the backups "haven backup" and "haven migrate" take; empty
  # means data_dir/backups. When set, "haven health" checks the age of the
  # newest backup in it. See docs/operations.md.
  # HAVEN_BACKUP_DIR
  dir: ""
  # Age of the newest backup at which "haven health" says WARNING, and CRITICAL.
  # HAVEN_BACKUP_WARN_AGE
  warn_age: 26h
  # HAVEN_BACKUP_CRITICAL_AGE
  critical_age: 50h
  # MiB/s at which "haven backup" reads the database and the media
  # files, so the server keeps its disk; 0 is unlimited (--max-rate overrides).
  # HAVEN_BACKUP_MAX_RATE
  max_rate: 64

media:
  # Largest upload accepted, in bytes (50 MiB). A reverse proxy in front must
  # accept bodies this large too (nginx: client_max_body_size).
  # HAVEN_MEDIA_MAX_UPLOAD_BYTES
  max_upload_bytes: 52428800
  # Total bytes a user may have uploaded; 0 means no quota. Over it, uploads
  # are refused with 413 M_TOO_LARGE.
  # HAVEN_MEDIA_QUOTA_BYTES_PER_USER
  quota_bytes_per_user: 0
  # Largest image, in pixels (width x height), that gets thumbnails; larger
  # ones are refused before decoding (up to 4 bytes a pixel of memory).
  # HAVEN_MEDIA_MAX_THUMBNAIL_PIXELS
  max_thumbnail_pixels: 50000000
  # Thumbnails made at the same time.
  # HAVEN_MEDIA_THUMBNAIL_WORKERS
  thumbnail_workers: 2
  # Upload IDs from /media/v1/create a user may hold before uploading.
  # HAVEN_MEDIA_MAX_PENDING_UPLOADS
  max_pending_uploads: 20
  # Serve the deprecated unauthenticated /_matrix/media/v3/download and
  # /thumbnail endpoints (clients and bridges from before spec v1.11 use
  # them); off, they answer 404 and media needs an access token.
  # HAVEN_MEDIA_LEGACY_UNAUTHENTICATED
  legacy_unauthenticated: false
  # URL previews (/preview_url): the server fetches the pages users paste,
  # so turn it on knowingly. Off, the endpoint answers 404.
  # HAVEN_MEDIA_URL_PREVIEWS
  url_previews: false
  # Address ranges previews never fetch from, besides the built-in private,
  # loopback, link-local and other special ranges; CIDR, e.g. [10.1.0.0/16].
  # HAVEN_MEDIA_URL_PREVIEW_DENIED_RANGES
  url_preview_denied_ranges: []
  # Exceptions to the denied ranges, e.g. [10.1.2.3/32] for an intranet wiki.
  # HAVEN_MEDIA_URL_PREVIEW_ALLOWED_RANGES
  url_preview_allowed_ranges: []

# Registration files of application services (bridges and bots), e.g.
# ["/etc/haven/irc-registration.yaml"]. In the environment: comma-separated.
# HAVEN_APP_SERVICES
app_services: []

# Federation (the Server-Server API) with your company's other sites and
# any other Matrix servers you allow. Off by default.
federation:
  # HAVEN_FEDERATION_ENABLED
  enabled: false
  # HTTPS address of /_matrix/federation and /_matrix/key, e.g. 0.0.0.0:8448.
  # Peers find it by server discovery (/.well-known/matrix/server, SRV
  # records, or port 8448 of server_name), or by their own static map.
  # HAVEN_FEDERATION_LISTEN
  listen: ""
  # PEM files of the listener's certificate (with its chain) and its key.
  # The certificate must cover server_name's host, or the host that
  # /.well-known/matrix/server delegates to (best: both). Haven loads new
  # files on SIGHUP (a broken new pair is reported and the old one kept).
  # HAVEN_FEDERATION_TLS_CERT
  tls_cert: ""
  # HAVEN_FEDERATION_TLS_KEY
  tls_key: ""
  # PEM file of the CAs trusted for peers' certificates (your company CA);
  # empty: the system's CAs.
  # HAVEN_FEDERATION_CA_FILE
  ca_file: ""
  # Present tls_cert to peers as a client certificate, and require one
  # (issued by ca_file's CAs) from every peer that connects.
  # HAVEN_FEDERATION_MUTUAL_TLS
  mutual_tls: false
  # The only servers federated with, e.g. ["b.example.com", "c.example.com"];
  # empty: any server. In the environment: comma-separated.
  # HAVEN_FEDERATION_ALLOWED_SERVERS
  allowed_servers: []
  # Static addresses of partner servers, used instead of discovery, e.g.
  #   servers:
  #     b.example.com: 10.0.0.6:8448
  #     c.example.com: matrix.c.example.com:8448
  # In the environment: b.example.com=10.0.0.6:8448,c.example.com=...
  # HAVEN_FEDERATION_SERVERS
  servers: {}
  # Let outbound requests reach loopback, private and link-local addresses
  # for servers not named in allowed_servers or servers. Named servers may
  # always use such addresses.
  # HAVEN_FEDERATION_ALLOW_PRIVATE_ADDRESSES
  allow_private_addresses: false
  # Accept any certificate from peers. Only for test suites whose servers
  # use throwaway certificates; Haven warns at start when it is on.
  # HAVEN_FEDERATION_INSECURE_SKIP_TLS_VERIFY
  insecure_skip_tls_verify: false

# Who may look up users' profiles (GET /profile/{userId}).
profiles:
  # Answer only requests with an access token.
  # HAVEN_PROFILES_REQUIRE_TOKEN
  require_token: true
  # Answer a user's profile only to users sharing a room with them, or
  # who can find them in the user directory (joined to a public room).
  # HAVEN_PROFILES_LIMIT_TO_SHARED_ROOMS
  limit_to_shared_rooms: false

push:
  # Internal address ranges push gateways may be at, e.g. [10.1.2.3/32]
  # for your own Sygnal; gateways at loopback, private and link-local
  # addresses are refused otherwise.
  # HAVEN_PUSH_GATEWAY_ALLOWED_RANGES
  gateway_allowed_ranges: []

# Email through your SMTP server: password resets, adding an email
# address to an account, notifications of unread messages. Off while
# smtp_host is empty.
email:
  # HAVEN_EMAIL_SMTP_HOST
  smtp_host: ""
  # HAVEN_EMAIL_SMTP_PORT
  smtp_port: 587
  # starttls (port 587), tls (port 465) or none (a relay on this host).
  # HAVEN_EMAIL_SMTP_TLS
  smtp_tls: starttls
  # HAVEN_EMAIL_SMTP_USERNAME
  smtp_username: ""
  # HAVEN_EMAIL_SMTP_PASSWORD
  smtp_password: ""
  # Sender, e.g. "Haven <chat@example.com>".
  # HAVEN_EMAIL_FROM
  from: ""
  # How long a message stays unread before an email notification is sent.
  # HAVEN_EMAIL_NOTIFICATION_DELAY
  notification_delay: 10m
  # Web client linked from notification emails, e.g. https://element.example.com;
  # empty: matrix.to.
  # HAVEN_EMAIL_CLIENT_URL
  client_url: ""
  # Validation emails sent to one address per hour, at most.
  # HAVEN_EMAIL_TOKENS_PER_HOUR
  tokens_per_hour: 5
`
