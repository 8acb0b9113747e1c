package httpx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
)

// RequestInfo collects what the access log reports about one request. The
// auth middleware fills in the user; WriteError fills in the errcode.
type RequestInfo struct {
	ID       string
	UserID   string
	DeviceID string
	ErrCode  string
	// Upstream is set when the answer is an upstream failure (merr's
	// Upstream kinds): its access log line is a warning.
	Upstream bool
	// Route is the route pattern (set by the router's handler wrapper).
	Route string
	// Parked is set by a handler that took the connection over: the log
	// line and the metrics are then written by Finish, when it answers.
	Parked bool

	mu       sync.Mutex
	finish   func(status int) // set when the handler has returned
	finished bool             // set when Finish came first
	status   int
}

// Finish logs and measures a parked request once it is answered. It may run
// before or after the handler has returned.
func (ri *RequestInfo) Finish(status int) {
	if ri == nil {
		return
	}
	ri.mu.Lock()
	f := ri.finish
	if f == nil {
		ri.finished, ri.status = true, status
	}
	ri.finish = nil
	ri.mu.Unlock()
	if f != nil {
		f(status)
	}
}

// parkedReturned is called by the access log when a parked request's
// handler has returned.
func (ri *RequestInfo) parkedReturned(done func(status int)) {
	ri.mu.Lock()
	if ri.finished {
		ri.mu.Unlock()
		done(ri.status)
		return
	}
	ri.finish = done
	ri.mu.Unlock()
}

type infoKey struct{}

// Info returns the request's RequestInfo, if the access-log middleware runs.
func Info(ctx context.Context) *RequestInfo {
	ri, _ := ctx.Value(infoKey{}).(*RequestInfo)
	return ri
}

// StatusWriter records the status and size of a response.
type StatusWriter struct {
	http.ResponseWriter
	Status int
	Bytes  int64
}

func (s *StatusWriter) WriteHeader(code int) {
	if s.Status == 0 {
		s.Status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *StatusWriter) Write(b []byte) (int, error) {
	if s.Status == 0 {
		s.Status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.Bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *StatusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush passes flushes through.
func (s *StatusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Request IDs are a per-process random prefix and a counter: unique, and
// cheaper than reading the random source on every request.
var (
	idPrefix  = randomPrefix()
	idCounter atomic.Uint64
)

func randomPrefix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newRequestID() string {
	return idPrefix + "-" + strconv.FormatUint(idCounter.Add(1), 36)
}

// Observer is told about every finished request (metrics hook).
type Observer func(r *http.Request, ri *RequestInfo, status int, d time.Duration)

// AccessLog gives each request an ID and a logger, recovers panics as
// 500 M_UNKNOWN, and writes one log line per request. The query string is
// never logged: it may hold an access token.
func AccessLog(log *logrus.Logger, observe Observer) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ri := &RequestInfo{ID: newRequestID()}
			entry := log.WithField("req_id", ri.ID)
			ctx := context.WithValue(r.Context(), infoKey{}, ri)
			ctx = logging.With(ctx, entry)
			r = r.WithContext(ctx)
			sw := &StatusWriter{ResponseWriter: w}
			defer func() {
				if p := recover(); p != nil {
					if p == http.ErrAbortHandler {
						panic(p)
					}
					entry.WithField("panic", fmt.Sprint(p)).WithField("stack", string(debug.Stack())).Error("handler panicked")
					PanicsTotal.Add(1)
					if sw.Status == 0 {
						// Logged just above; write the answer without logging it again.
						writeMatrixError(sw, r, merr.Custom(http.StatusInternalServerError, "M_UNKNOWN", "Internal server error"))
					}
				}
				status := sw.Status
				if status == 0 {
					status = http.StatusOK
				}
				done := func(status int) {
					d := time.Since(start)
					if observe != nil {
						observe(r, ri, status, d)
					}
					lvl := logrus.InfoLevel
					switch {
					case status >= 500 && ri.Upstream:
						lvl = logrus.WarnLevel
					case status >= 500 && !expected5xx(ri.ErrCode):
						lvl = logrus.ErrorLevel
					}
					if !log.IsLevelEnabled(lvl) {
						return
					}
					f := logrus.Fields{
						"method":      r.Method,
						"path":        r.URL.Path,
						"status":      status,
						"duration_ms": float64(d.Microseconds()) / 1000,
					}
					if ri.UserID != "" {
						f["user_id"] = ri.UserID
					}
					if ri.DeviceID != "" {
						f["device_id"] = ri.DeviceID
					}
					if ri.ErrCode != "" {
						f["errcode"] = ri.ErrCode
					}
					entry.WithFields(f).Log(lvl, "request")
				}
				if ri.Parked {
					ri.parkedReturned(done)
					return
				}
				done(status)
			}()
			next.ServeHTTP(sw, r)
		})
	}
}

// PanicsTotal counts recovered handler panics; each is a bug.
var PanicsTotal atomicCounter

// The CORS header values, shared by every response (never modified).
var (
	corsOrigin  = []string{"*"}
	corsMethods = []string{"GET, HEAD, POST, PUT, DELETE, OPTIONS"}
	corsHeaders = []string{"Origin, X-Requested-With, Content-Type, Accept, Authorization, Date"}
	corsExpose  = []string{"ETag, Content-Disposition, Retry-After"}
)

// CORS answers preflight requests and marks every response as readable from
// any origin, as browser clients on another origin (Element Web) need.
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Access-Control-Allow-Origin"] = corsOrigin
		h["Access-Control-Allow-Methods"] = corsMethods
		h["Access-Control-Allow-Headers"] = corsHeaders
		h["Access-Control-Expose-Headers"] = corsExpose
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Max-Age", "86400")
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("{}"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
