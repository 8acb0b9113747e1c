package clientapi

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/haven-chat/haven/internal/httpx"
)

// TestPathParamsRefuseNULAndBadUTF8: a path parameter with a NUL byte or
// invalid UTF-8 is refused with 400 M_INVALID_PARAM before the handler runs
// (PostgreSQL would fail on such text with a 500); other odd but valid text
// reaches the handler.
func TestPathParamsRefuseNULAndBadUTF8(t *testing.T) {
	var calls atomic.Int64
	h := func(w http.ResponseWriter, r *http.Request) error {
		calls.Add(1)
		return httpx.OK(w)
	}
	e := areaServer(t, nil, func(a *API) []func() []Route {
		return []func() []Route{func() []Route {
			return []Route{
				{Method: "GET", Path: "/test/{a}/{b}", H: h, Auth: authNone},
				{Method: "GET", Path: "/auth/{a}", H: h, Auth: authUser},
			}
		}}
	})
	for _, path := range []string{"/test/a%00b/x", "/test/x/%FF%FE", "/test/%C3/x", "/test/x/%ED%A0%80"} {
		e.want(e.do("GET", path, "", nil), 400, "M_INVALID_PARAM")
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times for refused parameters", n)
	}
	// The token is checked first: no hint about parameters to strangers.
	e.want(e.do("GET", "/auth/%00", "", nil), 401, "M_MISSING_TOKEN")
	e.want(e.do("GET", "/auth/%00", "alice-token", nil), 400, "M_INVALID_PARAM")
	for _, path := range []string{"/test/%E2%98%83/x", "/test/..%2F../%20", "/test/%25zz/-", "/auth/%21r:test"} {
		e.want(e.do("GET", path, "alice-token", nil), 200, "")
	}
	if n := calls.Load(); n != 4 {
		t.Fatalf("handler ran %d times, want 4", n)
	}
}

func TestLegacyPaths(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/_matrix/client/v3/sync", "/_matrix/client/r0/sync"},
		{"/_matrix/media/v3/upload", "/_matrix/media/r0/upload"},
		{"/_matrix/client/v3/room_keys/version", "/_matrix/client/r0/room_keys/version /_matrix/client/unstable/room_keys/version"},
		{"/_matrix/client/v3/keys/device_signing/upload", "/_matrix/client/r0/keys/device_signing/upload /_matrix/client/unstable/keys/device_signing/upload"},
		{"/_matrix/client/v1/media/config", ""},
		{"/_matrix/client/versions", ""},
		{"/_synapse/admin/v1/register", ""},
	} {
		if got := strings.Join(legacyPaths(c.in), " "); got != c.want {
			t.Errorf("legacyPaths(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
