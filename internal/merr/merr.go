// Package merr defines the error kinds that services return. internal/httpx
// turns them into an HTTP status, a Matrix errcode and an error message; no
// other package decides those.
package merr

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a Matrix error: errcode, message and the HTTP status it is sent with.
// Extra holds further top-level fields of the error body (retry_after_ms,
// soft_logout, the UIA flows, ...).
type Error struct {
	Code   string
	Msg    string
	Status int
	Extra  map[string]any
	// Upstream marks a failure of something Haven depends on (another
	// Matrix server, the company directory, the identity provider, a URL
	// fetched for a user): expected in normal operation, so httpx logs it
	// as a warning, not as a fault of Haven's.
	Upstream bool
	cause    error
}

func (e *Error) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Msg, e.cause)
	}
	return e.Code + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.cause }

// With returns a copy of e carrying an extra body field.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

// Wrap attaches an underlying cause (kept for logs, never sent to the client).
func (e *Error) Wrap(cause error) *Error {
	c := *e
	c.cause = cause
	return &c
}

func newErr(status int, code, format string, args ...any) *Error {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	return &Error{Code: code, Msg: msg, Status: status}
}

// As returns the Matrix error inside err, if any.
func As(err error) (*Error, bool) {
	var me *Error
	if errors.As(err, &me) {
		return me, true
	}
	return nil, false
}

// Is reports whether err carries the given errcode.
func Is(err error, code string) bool {
	me, ok := As(err)
	return ok && me.Code == code
}

func Forbidden(format string, args ...any) *Error {
	return newErr(http.StatusForbidden, "M_FORBIDDEN", format, args...)
}
func NotFound(format string, args ...any) *Error {
	return newErr(http.StatusNotFound, "M_NOT_FOUND", format, args...)
}
func BadJSON(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_BAD_JSON", format, args...)
}
func NotJSON(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_NOT_JSON", format, args...)
}
func TooLarge(format string, args ...any) *Error {
	return newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", format, args...)
}
func MissingToken(format string, args ...any) *Error {
	return newErr(http.StatusUnauthorized, "M_MISSING_TOKEN", format, args...)
}

// UnknownToken is the 401 for a token that is not (or no longer) valid.
// softLogout tells the client it may log in again and keep its device.
func UnknownToken(softLogout bool, format string, args ...any) *Error {
	return newErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", format, args...).With("soft_logout", softLogout)
}
func Unrecognized(format string, args ...any) *Error {
	return newErr(http.StatusNotFound, "M_UNRECOGNIZED", format, args...)
}

// MethodNotAllowed is M_UNRECOGNIZED with status 405, for a known path and an unknown method.
func MethodNotAllowed() *Error {
	return newErr(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Unrecognized request method")
}
func LimitExceeded(retryAfterMS int64) *Error {
	return newErr(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "Too many requests").With("retry_after_ms", retryAfterMS)
}
func UserInUse(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_USER_IN_USE", format, args...)
}
func InvalidUsername(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_INVALID_USERNAME", format, args...)
}
func Exclusive(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_EXCLUSIVE", format, args...)
}
func InvalidParam(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_INVALID_PARAM", format, args...)
}
func MissingParam(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_MISSING_PARAM", format, args...)
}
func Unknown(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_UNKNOWN", format, args...)
}
func UnsupportedRoomVersion(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", format, args...)
}
func RoomInUse(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_ROOM_IN_USE", format, args...)
}
func InvalidRoomState(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_INVALID_ROOM_STATE", format, args...)
}
func BadState(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_BAD_STATE", format, args...)
}
func WeakPassword(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_WEAK_PASSWORD", format, args...)
}
func UserDeactivated(format string, args ...any) *Error {
	return newErr(http.StatusForbidden, "M_USER_DEACTIVATED", format, args...)
}
func GuestAccessForbidden(format string, args ...any) *Error {
	return newErr(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", format, args...)
}
func ServerNotTrusted(format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, "M_SERVER_NOT_TRUSTED", format, args...)
}
func NotYetUploaded(format string, args ...any) *Error {
	return newErr(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", format, args...)
}

// Upstream kinds: a service Haven relies on failed, not Haven itself.

// BadGateway is 502 M_UNKNOWN: the other side answered, but unusably
// (an error, a malformed or too large answer).
func BadGateway(format string, args ...any) *Error {
	return newErr(http.StatusBadGateway, "M_UNKNOWN", format, args...).FromUpstream()
}

// Unavailable is 503 M_UNKNOWN: the other side cannot be reached (refused
// connection, DNS failure, directory or identity provider down).
func Unavailable(format string, args ...any) *Error {
	return newErr(http.StatusServiceUnavailable, "M_UNKNOWN", format, args...).FromUpstream()
}

// UpstreamTimeout is 504 M_UNKNOWN: the other side did not answer in time.
func UpstreamTimeout(format string, args ...any) *Error {
	return newErr(http.StatusGatewayTimeout, "M_UNKNOWN", format, args...).FromUpstream()
}

// FromUpstream returns a copy of e marked as an upstream failure (for a
// Custom error with another errcode).
func (e *Error) FromUpstream() *Error {
	c := *e
	c.Upstream = true
	return &c
}

// Unauthorized is the 401 that user-interactive authentication answers with;
// the UIA body (flows, params, session, completed) goes in Extra.
func Unauthorized(format string, args ...any) *Error {
	return newErr(http.StatusUnauthorized, "M_UNAUTHORIZED", format, args...)
}

// Custom builds an error with any errcode and status, for the rare case the
// constructors above do not cover.
func Custom(status int, code, format string, args ...any) *Error {
	return newErr(status, code, format, args...)
}
