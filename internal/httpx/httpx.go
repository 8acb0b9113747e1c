// Package httpx holds the HTTP plumbing every API shares: decoding request
// bodies with limits, writing JSON, the one place where errors become Matrix
// error responses, and the middleware (request IDs, access log, panic
// recovery, CORS).
package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
)

// HandlerFunc is a handler that returns an error instead of writing one.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts a HandlerFunc to http.Handler; a returned error is written by WriteError.
func Handle(h HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			WriteError(w, r, err)
		}
	}
}

// JSON writes v as a JSON body with the given status.
func JSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return RawJSON(w, status, body)
}

// RawJSON writes an already encoded JSON body.
func RawJSON(w http.ResponseWriter, status int, body []byte) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err := w.Write(body)
	if err != nil {
		// The client went away; nothing more can be sent.
		return nil
	}
	return nil
}

// OK writes {} with 200.
func OK(w http.ResponseWriter) error { return RawJSON(w, http.StatusOK, []byte("{}")) }

// ErrorBody is the JSON of a Matrix error.
func ErrorBody(e *merr.Error) map[string]any {
	body := make(map[string]any, 2+len(e.Extra))
	for k, v := range e.Extra {
		body[k] = v
	}
	body["errcode"] = e.Code
	body["error"] = e.Msg
	return body
}

// WriteError is the one mapping from errors to responses. A Matrix error is
// sent as it is; anything else is logged once and becomes 500 M_UNKNOWN.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	writeMatrixError(w, r, matrixError(r.Context(), err))
}

// ErrorReply is WriteError's answer to err as a status and a body, for a
// request answered later, outside its handler (a parked long-poll): err
// is mapped and logged the same way, with ctx's logger and request info.
func ErrorReply(ctx context.Context, err error) (int, []byte) {
	status, body, _ := errorJSON(ctx, matrixError(ctx, err))
	return status, body
}

// matrixError maps err to the Matrix error answered for it, logging it as
// its kind needs.
func matrixError(ctx context.Context, err error) *merr.Error {
	me, ok := merr.As(err)
	if !ok {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			// The client disconnected; log quietly, there is nobody to answer.
			logging.From(ctx).WithError(err).Debug("request cancelled by client")
			return merr.Custom(499, "M_UNKNOWN", "Request cancelled")
		}
		logging.From(ctx).WithError(err).Error("internal error")
		return merr.Custom(http.StatusInternalServerError, "M_UNKNOWN", "Internal server error")
	}
	if me.Upstream {
		// Another server or service failed (merr.BadGateway, Unavailable,
		// UpstreamTimeout): worth a warning, not a fault of Haven's.
		logging.From(ctx).WithError(err).WithField("status", me.Status).Warn("upstream failure")
	} else if me.Status >= 500 && !expected5xx(me.Code) {
		logging.From(ctx).WithError(err).Error("internal error")
	}
	return me
}

// expected5xx tells the 5xx answers that the spec gives for a normal
// situation (not a fault of the server), which are not logged as errors.
func expected5xx(code string) bool {
	return code == "M_NOT_YET_UPLOADED"
}

// writeMatrixError sends a Matrix error as it is, without logging it.
func writeMatrixError(w http.ResponseWriter, r *http.Request, me *merr.Error) {
	status, body, encoded := errorJSON(r.Context(), me)
	if ms, ok := millis(me.Extra["retry_after_ms"]); ok && encoded {
		w.Header().Set("Retry-After", itoa((ms+999)/1000))
	}
	_ = RawJSON(w, status, body)
}

// errorJSON is the status and body of a Matrix error, noted in the
// request's info; encoded is false when the error's fields could not be
// encoded and a plain 500 M_UNKNOWN stands for it.
func errorJSON(ctx context.Context, me *merr.Error) (status int, body []byte, encoded bool) {
	ri := Info(ctx)
	if ri != nil {
		ri.ErrCode = me.Code
		ri.Upstream = me.Upstream
	}
	body, err := json.Marshal(ErrorBody(me))
	if err != nil {
		// An Extra field that cannot be encoded is a bug; the client still
		// gets a well-formed error instead of an empty 200.
		logging.From(ctx).WithError(err).WithField("errcode", me.Code).Error("cannot encode error body")
		if ri != nil {
			ri.ErrCode = "M_UNKNOWN"
		}
		return http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`), false
	}
	return me.Status, body, true
}

// millis reads a retry_after_ms value of any numeric type.
func millis(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case int32:
		return int64(n), true
	case uint32:
		return int64(n), true
	case float64:
		if n != n || n > 1e15 || n < -1e15 {
			return 0, false
		}
		return int64(n), true
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	}
	return 0, false
}

func itoa(n int64) string {
	if n <= 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// DecodeJSON reads a JSON object of at most limit bytes into v.
// It answers M_TOO_LARGE, M_NOT_JSON or M_BAD_JSON as the body deserves.
func DecodeJSON(r *http.Request, v any, limit int64) error {
	body, err := ReadBody(r, limit)
	if err != nil {
		return err
	}
	return Unmarshal(body, v)
}

// ReadBody reads the whole request body, refusing more than limit bytes.
func ReadBody(r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	if limit < 0 {
		limit = 0
	}
	if r.ContentLength > limit {
		return nil, merr.TooLarge("Request body is larger than %d bytes", limit)
	}
	// Read one byte more than allowed to tell "exactly limit" from "more";
	// the Content-Length header may be absent or lie.
	n := limit
	if n < math.MaxInt64 {
		n++
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, n))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, merr.TooLarge("Request body is larger than %d bytes", tooBig.Limit)
		}
		return nil, merr.NotJSON("Could not read request body")
	}
	if int64(len(body)) > limit {
		return nil, merr.TooLarge("Request body is larger than %d bytes", limit)
	}
	return body, nil
}

// Unmarshal decodes a JSON object into v. An empty body decodes as {}.
func Unmarshal(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		trimmed = []byte("{}")
	}
	// JSON is UTF-8 (RFC 8259). encoding/json lets invalid bytes through in
	// strings, and a body kept as it is (event content, account data) would
	// reach the database with them: PostgreSQL refuses such text.
	if !utf8.Valid(trimmed) {
		return merr.NotJSON("Content is not valid UTF-8")
	}
	if trimmed[0] != '{' {
		if !json.Valid(trimmed) {
			return merr.NotJSON("Content not JSON")
		}
		return merr.BadJSON("Request body must be a JSON object")
	}
	// json.Unmarshal checks the whole body's syntax before it decodes
	// anything: a syntax error is M_NOT_JSON, whatever the fields.
	if err := json.Unmarshal(trimmed, v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return merr.NotJSON("Content not JSON")
		}
		// A field type's own UnmarshalJSON may already say what is wrong.
		if me, ok := merr.As(err); ok {
			return me
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := te.Field
			if field == "" {
				field = "body"
			}
			want := "another type"
			if te.Type != nil {
				want = te.Type.String()
			}
			return merr.BadJSON("Field %q has the wrong type: expected %s", field, want)
		}
		return merr.BadJSON("Malformed JSON: %s", err.Error())
	}
	return nil
}

// BearerToken returns the access token of the request, from the Authorization
// header or the access_token query parameter.
func BearerToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:])
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}
