package userapi

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haven-chat/haven/internal/keyed"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/internal/stream"
	"github.com/haven-chat/haven/storage"
)

// Bus is the part of the message bus the user service needs. Subscribe is
// used for cache invalidations coming from other Haven processes.
type Bus interface {
	Publish(topic string, data []byte) error
	Subscribe(topic string, fn func(data []byte)) (func(), error)
}

// RegistrationTokens keeps the registration tokens of the
// m.login.registration_token UIA stage (adminapi/regtokens).
type RegistrationTokens interface {
	// ValidRegistrationToken tells whether a token may still be used.
	ValidRegistrationToken(ctx context.Context, token string) (bool, error)
	// ReserveRegistrationToken takes one use of a valid token for a
	// registration under way (pending); false when the token is unknown,
	// expired or used up.
	ReserveRegistrationToken(ctx context.Context, token string) (bool, error)
	// FinishRegistrationToken ends a reserved use: completed when the
	// account was made, given back when not.
	FinishRegistrationToken(ctx context.Context, token string, registered bool) error
}

// DeviceListener hears of devices added (login, registration), deleted or
// renamed after the change committed: userapi/keys records it on the
// device list stream and drops the deleted devices' keys.
type DeviceListener interface {
	DevicesChanged(ctx context.Context, userID string, added, deleted []string)
	DeviceRenamed(ctx context.Context, userID, deviceID string)
}

// AppServices are the application services as accounts see them
// (appservice.Service): who holds a user ID exclusively, and whether a
// service, asked about an unknown user of its namespaces, made it.
type AppServices interface {
	// ExclusiveUserOwner returns the ID of the service that holds the user
	// ID exclusively, or "".
	ExclusiveUserOwner(userID string) string
	// QueryUser asks the services with the user in a namespace whether it
	// exists; true when one of them says so (and has created it).
	QueryUser(ctx context.Context, userID string) bool
}

// Options configure the user service.
type Options struct {
	ServerName string
	// AppServices, when set, reserves the exclusive namespaces of the
	// application services and asks them about unknown users on profile
	// lookups.
	AppServices AppServices
	// DeviceLists, when set, is told of every device added or deleted.
	DeviceLists DeviceListener
	// PasswordHashCost is the bcrypt cost (config password_hash_cost).
	PasswordHashCost int
	// SharedSecret enables shared-secret registration when not empty.
	SharedSecret string
	// RegistrationTokens keeps the registration tokens; with
	// RequireRegistrationToken, registration offers only the
	// m.login.registration_token flow.
	RegistrationTokens       RegistrationTokens
	RequireRegistrationToken bool
	// SecondFactor, when set, is the two-factor policy: accounts that must
	// give a second factor cannot use m.login.password, and their
	// sensitive operations ask for m.login.sso instead of the password.
	SecondFactor SecondFactor
	// TokenCacheSize bounds the access tokens kept in memory.
	TokenCacheSize int
	// AccessTokenLifetime is how long an access token lives when its
	// session has a refresh token (config access_token_lifetime; default
	// 5 minutes). Sessions without one keep tokens that never expire.
	AccessTokenLifetime time.Duration
	// SeenInterval is how stale devices.last_seen_ts may get (default 5 minutes).
	SeenInterval time.Duration
	// SeenFlushInterval is how often the last-seen writer runs (default 30 s).
	SeenFlushInterval time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Audit, when set, records sign-ins, failed sign-ins and refused
	// attempts (internal/audit); without it they are only logged.
	Audit AuditRecorder
	// Directory, when its Directory is set, checks passwords against the
	// company directory (ldap.go) before the accounts' own.
	Directory DirectoryOptions
	// PasswordPolicy applies to every password being set, except through
	// shared-secret registration; the zero value only bounds the length.
	PasswordPolicy PasswordPolicy
	// Mail, when set (email configured), sends the validation emails of
	// requestToken; PublicBaseURL starts their links; EmailTokensPerHour
	// bounds them per address.
	Mail               MailSender
	PublicBaseURL      string
	EmailTokensPerHour int
	// AccountURL, when set (the OAuth 2.0 API is on), is the absolute URL
	// of the account page: sessions of the OAuth API are offered the
	// m.oauth UIA stage (uia_oauth.go) with a link to it.
	AccountURL string
	// UpstreamUIA (company identity providers configured): an account
	// linked to a provider that has no Haven password is offered the
	// m.login.sso stage, which signs in at the provider again, instead of
	// the password it cannot give.
	UpstreamUIA bool
}

// Service is the user service. All its methods are safe for concurrent use.
type Service struct {
	db   *storage.DB
	bus  Bus
	opts Options
	now  func() time.Time

	mailLimit emailLimiter

	// token cache: hash → Device; unknown remembers hashes that are not tokens.
	tokMu    sync.Mutex
	tokGen   atomic.Uint64
	tokens   *lru.Cache[string, Device]
	unknown  *lru.Cache[string, struct{}]
	dummy    dummyHash
	attempts *backoff

	seenMu      sync.Mutex
	seenWritten map[string]seenMark
	seenPending map[deviceKey]seenUpdate

	// userLocks serialise one user's writes of account data, push rules and profile.
	userLocks keyed.Mutex
	adSeq     *stream.Sequencer
	profiles  *lru.Cache[string, profileEntry]
	pushRules *lru.Cache[string, *pushState]
	// ignored caches each user's ignore list (ignored.go).
	ignored *lru.Cache[string, map[string]struct{}]
	filters *lru.Cache[string, []byte]

	stopOnce sync.Once
	started  atomic.Bool
	stop     chan struct{}
	done     chan struct{}
	unsub    func()
}

// New creates the user service. bus may be nil (command-line tools, tests):
// nothing is published then.
func New(ctx context.Context, db *storage.DB, bus Bus, opts Options) (*Service, error) {
	if opts.ServerName == "" {
		return nil, fmt.Errorf("userapi: server name is empty")
	}
	if opts.PasswordHashCost == 0 {
		opts.PasswordHashCost = 12
	}
	if opts.TokenCacheSize <= 0 {
		opts.TokenCacheSize = 100000
	}
	if opts.SeenInterval <= 0 {
		opts.SeenInterval = 5 * time.Minute
	}
	if opts.SeenFlushInterval <= 0 {
		opts.SeenFlushInterval = 30 * time.Second
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	last, err := maxAccountDataPos(ctx, db)
	if err != nil {
		return nil, err
	}
	s := &Service{
		db:          db,
		bus:         bus,
		opts:        opts,
		now:         now,
		tokens:      lru.New[string, Device]("access_tokens", opts.TokenCacheSize),
		unknown:     lru.New[string, struct{}]("unknown_tokens", 10000),
		attempts:    newBackoff(db, now),
		seenWritten: make(map[string]seenMark),
		seenPending: make(map[deviceKey]seenUpdate),
		profiles:    lru.New[string, profileEntry]("profiles", 50000),
		pushRules:   lru.New[string, *pushState]("push_rules", 2000),
		ignored:     lru.New[string, map[string]struct{}]("ignored_users", 50000),
		filters:     lru.New[string, []byte]("filters", 20000),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	floor, err := storage.StreamFloor(ctx, db, storage.StreamAccountData)
	if err != nil {
		return nil, err
	}
	s.adSeq = stream.New(max(last, floor), s.publishAccountData)
	return s, nil
}

// ServerName is the server name user IDs are made with.
func (s *Service) ServerName() string { return s.opts.ServerName }

// Start subscribes to cache invalidations from other processes and starts
// the last-seen writer. Close stops both.
func (s *Service) Start(ctx context.Context) error {
	if s.bus != nil {
		unsub, err := s.bus.Subscribe(InvalidateTopic, s.onInvalidate)
		if err != nil {
			return fmt.Errorf("userapi: %w", err)
		}
		s.unsub = unsub
	}
	if s.started.CompareAndSwap(false, true) {
		go s.seenLoop(logging.From(ctx))
	}
	return nil
}

// Close stops the background work and waits for it, writing the pending
// last-seen updates. Call it before closing the database.
func (s *Service) Close() {
	s.stopOnce.Do(func() {
		if s.unsub != nil {
			s.unsub()
		}
		close(s.stop)
		if s.started.Load() {
			<-s.done
		}
	})
}

// InvalidateTopic carries cache invalidations between Haven processes.
const InvalidateTopic = "userapi.invalidate"

// invalidation is the message on InvalidateTopic.
type invalidation struct {
	TokenHashes []string `json:"token_hashes,omitempty"`
	Profile     string   `json:"profile,omitempty"`
	PushRules   string   `json:"push_rules,omitempty"`
}

func (s *Service) onInvalidate(data []byte) {
	var inv invalidation
	if err := json.Unmarshal(data, &inv); err != nil {
		return
	}
	if len(inv.TokenHashes) > 0 {
		s.dropTokens(inv.TokenHashes)
	}
	if inv.Profile != "" {
		s.profiles.Remove(inv.Profile)
	}
	if inv.PushRules != "" {
		s.pushRules.Remove(inv.PushRules)
	}
}

// broadcast tells other processes to drop cached entries. This process has
// already dropped them; receiving its own message again is harmless.
func (s *Service) broadcast(ctx context.Context, inv invalidation) {
	if s.bus == nil {
		return
	}
	data, err := json.Marshal(inv)
	if err != nil {
		return
	}
	if err := s.bus.Publish(InvalidateTopic, data); err != nil {
		logging.From(ctx).WithError(err).Warn("cannot publish cache invalidation")
	}
}
