package httpx

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/haven-chat/haven/internal/merr"
)

// Upstream failures (another server, the directory, the identity
// provider) answer 502/503/504 and are logged as warnings, access line
// included; other 5xx stay errors.
func TestUpstreamFailuresAreWarnings(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		level  string
	}{
		{"bad gateway", merr.BadGateway("%s answered 500", "other.example").Wrap(errors.New("boom")), 502, "warning"},
		{"unavailable", merr.Unavailable("The company directory cannot be reached").Wrap(errors.New("dial tcp: refused")), 503, "warning"},
		{"timeout", merr.UpstreamTimeout("other.example did not answer in time"), 504, "warning"},
		{"custom marked", merr.Custom(502, "M_TOO_LARGE", "too large").FromUpstream(), 502, "warning"},
		{"plain 503 is ours", merr.Custom(503, "M_UNKNOWN", "could not be stored").Wrap(errors.New("disk full")), 503, "error"},
		{"internal", errors.New("disk full"), 500, "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, buf := testLogger(t)
			h := AccessLog(log, nil)(Handle(func(w http.ResponseWriter, r *http.Request) error { return tc.err }))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
			if rec.Code != tc.status {
				t.Fatalf("status %d", rec.Code)
			}
			lines := logLines(t, buf)
			if len(lines) != 2 {
				t.Fatalf("want the failure and the access line:\n%s", buf.String())
			}
			for _, l := range lines {
				if l["level"] != tc.level {
					t.Fatalf("level %v, want %s: %v", l["level"], tc.level, l)
				}
			}
			if b := decodeBody(t, rec); tc.status != 500 && b["errcode"] == "" {
				t.Fatalf("body %v", b)
			}
		})
	}
}
