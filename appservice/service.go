package appservice

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/userapi"
)

// users is what the services ask of the user API.
type users interface {
	AccountExists(ctx context.Context, userID string) (bool, error)
	DeviceByID(ctx context.Context, userID, deviceID string) (userapi.DeviceInfo, error)
	Register(ctx context.Context, req userapi.RegisterRequest) (userapi.Session, error)
}

// rooms is what the transaction feed asks of the roomserver.
type rooms interface {
	Position() int64
	AllRoomMemberships(ctx context.Context, fn func(roomID, userID, membership string, pos int64)) error
	AliasesOf(ctx context.Context, roomID string) ([]string, error)
	RoomsOf(ctx context.Context, userID string) (map[string]string, error)
}

// toDevice gives the to-device messages queued for a device and deletes
// those delivered (userapi/keys).
type toDevice interface {
	ToDeviceMessages(ctx context.Context, userID, deviceID string, after, upto int64, limit int) ([]json.RawMessage, int64, error)
	AckToDevice(ctx context.Context, userID, deviceID string, upto int64) error
}

// Bus is the part of the bus the services need: the notices of the
// streams, and JetStream for the durable transaction queues.
type Bus interface {
	Subscribe(topic string, fn func(data []byte)) (func(), error)
	Conn() *nats.Conn
	Subject(topic string) string
}

// Options tune the transaction sender.
type Options struct {
	ServerName string
	// RetryBase is the wait before a failed transaction is sent again; it
	// doubles with each failure up to RetryMax. Defaults 1s and 1 min.
	RetryBase time.Duration
	RetryMax  time.Duration
	// TxnTimeout bounds one PUT of a transaction (default 60s).
	TxnTimeout time.Duration
	// HTTPClient, if set, is used for transactions (tests).
	HTTPClient *http.Client
}

// Deps are the services the application services need.
type Deps struct {
	DB    *storage.DB
	Bus   Bus
	Users users
	Rooms rooms
	// Keys, when set, gives the to-device messages of the services' users.
	Keys toDevice
}

// Service authenticates the services' requests and sends them their
// transactions.
type Service struct {
	q    *Queries
	reg  *Registry
	d    Deps
	opts Options

	js      jetstream.JetStream
	senders map[string]*sender
	feed    *feed
	unsubs  []func()
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

// New starts the application services: their sender users exist, each
// service with a URL gets a durable queue and a sender, and the feed
// follows the events stream from each service's stored position.
func New(ctx context.Context, q *Queries, d Deps, opts Options) (*Service, error) {
	if opts.RetryBase <= 0 {
		opts.RetryBase = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = time.Minute
	}
	if opts.TxnTimeout <= 0 {
		opts.TxnTimeout = 60 * time.Second
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	s := &Service{q: q, reg: q.reg, d: d, opts: opts, senders: map[string]*sender{}, stop: make(chan struct{})}
	if len(s.reg.regs) == 0 {
		return s, nil
	}
	if err := s.ensureSenders(ctx); err != nil {
		return nil, err
	}
	if err := s.start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// ensureSenders registers each service's sender user if it does not exist
// yet, as Dendrite does: the service's own requests and invites need it.
func (s *Service) ensureSenders(ctx context.Context) error {
	for _, r := range s.reg.regs {
		ok, err := s.d.Users.AccountExists(ctx, r.Sender)
		if err != nil {
			return fmt.Errorf("appservice %s: %w", r.ID, err)
		}
		if ok {
			continue
		}
		_, err = s.d.Users.Register(ctx, userapi.RegisterRequest{Localpart: r.SenderLocalpart, AppService: r.ID, InhibitLogin: true, Via: "appservice"})
		if err != nil && !merr.Is(err, "M_USER_IN_USE") {
			return fmt.Errorf("appservice %s: register its sender %s: %w", r.ID, r.Sender, err)
		}
	}
	return nil
}

// Close stops the feed and the senders; a transaction being sent is put
// back in its queue and sent again at the next start.
func (s *Service) Close() {
	s.once.Do(func() {
		for _, u := range s.unsubs {
			u()
		}
		close(s.stop)
		if s.feed != nil && s.feed.follow != nil {
			s.feed.follow.Close()
		}
		s.wg.Wait()
	})
}

// AuthenticateAppService resolves a token that is an application
// service's as_token; ok is false for any other token. userID (the
// user_id parameter) masquerades as a user of the service's namespaces,
// who must exist (403 M_FORBIDDEN otherwise); deviceID (device_id) acts
// with one of that user's devices (400 M_UNKNOWN_DEVICE). Without
// userID the request is the service's sender's; without deviceID it has
// no device.
func (s *Service) AuthenticateAppService(ctx context.Context, token, userID, deviceID string) (userapi.Device, bool, error) {
	r := s.reg.ByToken(token)
	if r == nil {
		return userapi.Device{}, false, nil
	}
	dev := userapi.Device{UserID: r.Sender, AppService: r.ID, SessionID: "appservice:" + r.ID}
	if userID != "" && userID != r.Sender {
		if !r.InUserNamespace(userID) {
			return dev, true, merr.Forbidden("The application service cannot act as %s: not in its namespace", userID)
		}
		ok, err := s.d.Users.AccountExists(ctx, userID)
		if err != nil {
			return dev, true, err
		}
		if !ok {
			return dev, true, merr.Forbidden("The application service has not registered %s", userID)
		}
		dev.UserID = userID
	}
	if deviceID != "" {
		if _, err := s.d.Users.DeviceByID(ctx, dev.UserID, deviceID); err != nil {
			if merr.Is(err, "M_NOT_FOUND") {
				return dev, true, merr.Custom(http.StatusBadRequest, "M_UNKNOWN_DEVICE", "%s has no device %s", dev.UserID, deviceID)
			}
			return dev, true, err
		}
		dev.DeviceID = deviceID
	}
	return dev, true, nil
}

// RateLimited tells whether the requests of a service's users are
// rate-limited (its sender's never are).
func (s *Service) RateLimited(dev userapi.Device) bool {
	r := s.reg.ByID(dev.AppService)
	return r != nil && r.RateLimited && dev.UserID != r.Sender
}

// ControlsUser tells whether a service may register or log in as a user:
// its sender or a user of its namespaces.
func (s *Service) ControlsUser(serviceID, userID string) bool {
	r := s.reg.ByID(serviceID)
	return r != nil && r.ControlsUser(userID)
}

// Ping pings a service for the service itself (see Queries.Ping); a
// success also ends the wait of its sender, if it waits to retry.
func (s *Service) Ping(ctx context.Context, callerID, serviceID, txnID string) (time.Duration, error) {
	d, err := s.q.Ping(ctx, callerID, serviceID, txnID)
	if err == nil {
		if snd := s.senders[serviceID]; snd != nil {
			snd.poke()
		}
	}
	return d, err
}

// log is the context's logger with the service named.
func (s *Service) log(ctx context.Context, r *Registration) *logrus.Entry {
	return logging.From(ctx).WithField("appservice", r.ID)
}
