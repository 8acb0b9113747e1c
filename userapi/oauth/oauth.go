package oauth

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"time"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/userapi"
)

// OAuth error codes (RFC 6749 section 5.2 and 4.1.2.1, RFC 7591 section 3.2.2).
const (
	ErrInvalidRequest          = "invalid_request"
	ErrInvalidClient           = "invalid_client"
	ErrInvalidGrant            = "invalid_grant"
	ErrUnauthorizedClient      = "unauthorized_client"
	ErrUnsupportedGrantType    = "unsupported_grant_type"
	ErrUnsupportedResponseType = "unsupported_response_type"
	ErrInvalidScope            = "invalid_scope"
	ErrAccessDenied            = "access_denied"
	ErrLoginRequired           = "login_required"
	ErrServerError             = "server_error"
	ErrInvalidRedirectURI      = "invalid_redirect_uri"
	ErrInvalidClientMetadata   = "invalid_client_metadata"
)

// Error is an OAuth error: its code and a description for developers.
type Error struct {
	Code        string
	Description string
	// Redirect: in an authorization request, the client and redirect URI
	// were valid, so the error goes back to the client by the redirect
	// rather than on an error page.
	Redirect bool
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

func oauthErr(code, format string, args ...any) *Error {
	return &Error{Code: code, Description: fmt.Sprintf(format, args...)}
}

// Lifetimes.
const (
	// CodeLifetime is how long an authorization code can be exchanged.
	CodeLifetime = 10 * time.Minute
)

// Sessions are the device sessions of the user API (userapi.Service).
type Sessions interface {
	LoginOAuth(ctx context.Context, userID, deviceID, displayName, clientAddr, clientID, scope string) (userapi.Session, error)
	OAuthSession(ctx context.Context, userID, deviceID string) (clientID, scope string, ok bool, err error)
	Refresh(ctx context.Context, refreshToken string) (userapi.Session, error)
	DeviceOfToken(ctx context.Context, token string) (userID, deviceID string, kind userapi.TokenKind, err error)
	DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error
}

// Options configure the service.
type Options struct {
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Service keeps the clients and codes and runs the grants.
type Service struct {
	db    *storage.DB
	users Sessions
	now   func() time.Time
}

// New returns the service.
func New(db *storage.DB, users Sessions, opts Options) *Service {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Service{db: db, users: users, now: now}
}

// randomID is 15 random bytes in base32: 24 characters A-Z, 2-7.
func randomID() (string, error) {
	var b [15]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return base32.StdEncoding.EncodeToString(b[:]), nil
}
