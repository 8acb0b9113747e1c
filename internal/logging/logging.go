// Package logging sets up logrus and carries a request-scoped entry in the
// context. Field names are fixed: req_id, user_id, device_id, room_id, event_id.
// Access tokens, passwords and TOTP secrets are never logged.
package logging

import (
	"context"
	"io"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
)

// New returns a logger writing text or JSON at the given level.
func New(format, level string, out io.Writer) (*logrus.Logger, error) {
	l := logrus.New()
	if out == nil {
		out = os.Stderr
	}
	l.SetOutput(out)
	switch strings.ToLower(format) {
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{})
	default:
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	}
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	l.SetLevel(lvl)
	return l, nil
}

type ctxKey struct{}

var fallback = logrus.NewEntry(logrus.StandardLogger())

// With returns a context whose logger carries the given entry.
func With(ctx context.Context, e *logrus.Entry) context.Context {
	return context.WithValue(ctx, ctxKey{}, e)
}

// From returns the context's logger, or the standard logger.
func From(ctx context.Context) *logrus.Entry {
	if e, ok := ctx.Value(ctxKey{}).(*logrus.Entry); ok {
		return e
	}
	return fallback
}

// WithField adds one field to the context's logger.
func WithField(ctx context.Context, key string, value any) context.Context {
	return With(ctx, From(ctx).WithField(key, value))
}

// SetFallback sets the logger used where a context carries none.
func SetFallback(l *logrus.Logger) { fallback = logrus.NewEntry(l) }
