package httpx

import (
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/haven-chat/haven/internal/merr"
)

// PathText reads a path parameter that names something (a room, user or
// event ID) as text. chi matches the escaped path when the request's
// escaping differs from Go's own (an ID sent with "$" as %24, or holding
// an escaped "/"), and then gives its parameters still escaped. An empty
// value, or one no database could hold (a NUL, invalid UTF-8), is 400
// M_INVALID_PARAM.
func PathText(r *http.Request, name string) (string, error) {
	v := chi.URLParam(r, name)
	if r.URL.RawPath != "" {
		u, err := url.PathUnescape(v)
		if err != nil {
			return "", merr.InvalidParam("Path parameter %s is not properly escaped", name)
		}
		v = u
	}
	if v == "" || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
		return "", merr.InvalidParam("Path parameter %s is not valid", name)
	}
	return v, nil
}
