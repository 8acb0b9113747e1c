package clientapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/roomkeys"
)

// backupTestAuth knows a fixed set of tokens.
type backupTestAuth map[string]userapi.Device

func (f backupTestAuth) Authenticate(_ context.Context, token string) (userapi.Device, error) {
	if d, ok := f[token]; ok {
		return d, nil
	}
	return userapi.Device{}, merr.UnknownToken(false, "Unknown token")
}

// areaServer serves the base areas plus the given ones, with alice's and bob's tokens.
func areaServer(t *testing.T, mod func(*config.Config), areas func(a *API) []func() []Route) *utEnv {
	t.Helper()
	cfg := config.Default()
	cfg.ServerName = "test"
	cfg.RateLimits.Enabled = false
	if mod != nil {
		mod(&cfg)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	api := &API{Cfg: cfg, Log: log, Auth: backupTestAuth{
		"alice-token": {UserID: "@alice:test", DeviceID: "ADEV"},
		"bob-token":   {UserID: "@bob:test", DeviceID: "BDEV"},
		"admin-token": {UserID: "@admin:test", DeviceID: "XDEV", IsAdmin: true},
	}, Limiter: NewLimiter(cfg.RateLimits)}
	api.Areas = append(api.BaseAreas(), areas(api)...)
	srv := httptest.NewServer(api.Router())
	t.Cleanup(srv.Close)
	return &utEnv{t: t, url: srv.URL}
}

const keyBody = `{"first_message_index":%d,"forwarded_count":0,"is_verified":false,"session_data":{"ciphertext":"%s"}}`

func TestRoomKeysRoutes(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := areaServer(t, nil, func(a *API) []func() []Route {
			return []func() []Route{a.RoomKeysArea(roomkeys.New(db))}
		})
		const base = "/_matrix/client/v3/room_keys"
		const alice = "alice-token"
		// No backup yet: a routed 404, as Element expects.
		e.want(e.do("GET", base+"/version", alice, nil), 404, "M_NOT_FOUND")
		e.want(e.do("GET", base+"/version", "", nil), 401, "M_MISSING_TOKEN")
		e.want(e.do("POST", base+"/version", alice, `not json`), 400, "M_NOT_JSON")
		e.want(e.do("POST", base+"/version", alice, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":"x"}`), 400, "M_BAD_JSON")
		r := e.do("POST", base+"/version", alice, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"pk"}}`)
		e.want(r, 200, "")
		if r.str("version") != "1" {
			t.Fatalf("create: %s", r.raw)
		}
		r = e.do("GET", base+"/version", alice, nil)
		e.want(r, 200, "")
		if r.str("version") != "1" || r.str("etag") == "" || r.body["count"] != float64(0) {
			t.Fatalf("current: %s", r.raw)
		}
		e.want(e.do("GET", base+"/version/1", "bob-token", nil), 404, "M_NOT_FOUND")

		// The three scopes of PUT.
		r = e.do("PUT", base+"/keys?version=1", alice, `{"rooms":{"!r:test":{"sessions":{"s1":`+fmt.Sprintf(keyBody, 3, "one")+`}}}}`)
		e.want(r, 200, "")
		r = e.do("PUT", base+"/keys/%21r:test?version=1", alice, `{"sessions":{"s2":`+fmt.Sprintf(keyBody, 0, "two")+`}}`)
		e.want(r, 200, "")
		r = e.do("PUT", base+"/keys/%21q:test/s3?version=1", alice, fmt.Sprintf(keyBody, 0, "three"))
		e.want(r, 200, "")
		if r.body["count"] != float64(3) || r.str("etag") == "" {
			t.Fatalf("put session: %s", r.raw)
		}
		// A worse key does not replace s1; a better one does.
		e.want(e.do("PUT", base+"/keys/%21r:test/s1?version=1", alice, fmt.Sprintf(keyBody, 5, "worse")), 200, "")
		r = e.do("GET", base+"/keys/%21r:test/s1?version=1", alice, nil)
		e.want(r, 200, "")
		if !strings.Contains(r.raw, `"one"`) {
			t.Fatalf("worse key replaced the stored one: %s", r.raw)
		}
		e.want(e.do("PUT", base+"/keys/%21r:test/s1?version=1", alice, fmt.Sprintf(keyBody, 1, "better")), 200, "")
		r = e.do("GET", base+"/keys/%21r:test/s1?version=1", alice, nil)
		if !strings.Contains(r.raw, `"better"`) {
			t.Fatalf("better key not stored: %s", r.raw)
		}
		// The three scopes of GET.
		r = e.do("GET", base+"/keys?version=1", alice, nil)
		e.want(r, 200, "")
		rooms, _ := r.body["rooms"].(map[string]any)
		if len(rooms) != 2 {
			t.Fatalf("all keys: %s", r.raw)
		}
		r = e.do("GET", base+"/keys/%21r:test?version=1", alice, nil)
		if sessions, _ := r.body["sessions"].(map[string]any); len(sessions) != 2 {
			t.Fatalf("room keys: %s", r.raw)
		}
		r = e.do("GET", base+"/keys/%21empty:test?version=1", alice, nil)
		e.want(r, 200, "")
		if strings.TrimSpace(r.raw) != `{"sessions":{}}` {
			t.Fatalf("empty room: %s", r.raw)
		}
		e.want(e.do("GET", base+"/keys/%21r:test/nope?version=1", alice, nil), 404, "M_NOT_FOUND")
		e.want(e.do("GET", base+"/keys", alice, nil), 400, "M_MISSING_PARAM")

		// Malformed uploads.
		e.want(e.do("PUT", base+"/keys/%21r:test/s1?version=1", alice, `{"first_message_index":1}`), 400, "M_BAD_JSON")
		e.want(e.do("PUT", base+"/keys/%21r:test?version=1", alice, `{}`), 400, "M_BAD_JSON")
		e.want(e.do("PUT", base+"/keys?version=1", alice, `{"rooms":[]}`), 400, "M_BAD_JSON")
		e.want(e.do("PUT", base+"/keys/notaroom/s1?version=1", alice, fmt.Sprintf(keyBody, 0, "x")), 400, "M_INVALID_PARAM")
		e.want(e.do("PUT", base+"/keys/%21r:test/s1", alice, fmt.Sprintf(keyBody, 0, "x")), 400, "M_MISSING_PARAM")

		// A new version: the old one is refused for writes, with the current version.
		e.want(e.do("POST", base+"/version", alice, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"pk2"}}`), 200, "")
		r = e.do("PUT", base+"/keys/%21r:test/s9?version=1", alice, fmt.Sprintf(keyBody, 0, "x"))
		e.want(r, 403, "M_WRONG_ROOM_KEYS_VERSION")
		if r.str("current_version") != "2" {
			t.Fatalf("wrong version answer: %s", r.raw)
		}

		// PUT version: algorithm and version must match.
		e.want(e.do("PUT", base+"/version/2", alice, `{"algorithm":"other","auth_data":{}}`), 400, "M_INVALID_PARAM")
		e.want(e.do("PUT", base+"/version/2", alice, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{},"version":"1"}`), 400, "M_INVALID_PARAM")
		e.want(e.do("PUT", base+"/version/2", alice, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"pk3"},"version":"2"}`), 200, "")
		r = e.do("GET", base+"/version/2", alice, nil)
		if !strings.Contains(r.raw, `"pk3"`) {
			t.Fatalf("update lost: %s", r.raw)
		}

		// DELETE in the three scopes, then the version.
		r = e.do("DELETE", base+"/keys/%21r:test/s1?version=1", alice, nil)
		e.want(r, 200, "")
		if r.body["count"] != float64(2) {
			t.Fatalf("delete session: %s", r.raw)
		}
		e.want(e.do("DELETE", base+"/keys/%21r:test?version=1", alice, nil), 200, "")
		r = e.do("DELETE", base+"/keys?version=1", alice, nil)
		if r.body["count"] != float64(0) {
			t.Fatalf("delete all: %s", r.raw)
		}
		e.want(e.do("DELETE", base+"/version/2", alice, nil), 200, "")
		e.want(e.do("DELETE", base+"/version/2", alice, nil), 404, "M_NOT_FOUND")
		e.want(e.do("GET", base+"/version/2", alice, nil), 404, "M_NOT_FOUND")
		e.want(e.do("PATCH", base+"/version/2", alice, nil), 405, "M_UNRECOGNIZED")
	})
}

func TestTURNCredentials(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name string
		cfg  config.TURN
		ok   bool
	}{
		{"nothing configured", config.TURN{UserLifetime: "1h"}, false},
		{"uris without secret", config.TURN{URIs: "turn:t.example:3478", UserLifetime: "1h"}, false},
		{"secret without uris", config.TURN{SharedSecret: "0123456789abcdef", UserLifetime: "1h"}, false},
		{"both", config.TURN{URIs: "turn:t.example:3478?transport=udp,turns:t.example:5349", SharedSecret: "0123456789abcdef", UserLifetime: "30m"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := TURNCredentials(tc.cfg, "@alice:test", now)
			if ok != tc.ok {
				t.Fatalf("ok = %v", ok)
			}
			if !ok {
				return
			}
			if c.Username != "1700001800:@alice:test" || c.TTL != 1800 || len(c.URIs) != 2 {
				t.Fatalf("credentials %+v", c)
			}
			mac := hmac.New(sha1.New, []byte(tc.cfg.SharedSecret))
			mac.Write([]byte(c.Username))
			if c.Password != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
				t.Fatalf("password %q", c.Password)
			}
		})
	}
}

func TestTurnServerRoute(t *testing.T) {
	e := areaServer(t, nil, func(a *API) []func() []Route { return nil })
	r := e.do("GET", "/_matrix/client/v3/voip/turnServer", "alice-token", nil)
	e.want(r, 200, "")
	if strings.TrimSpace(r.raw) != "{}" {
		t.Fatalf("unconfigured: %s", r.raw)
	}
	e = areaServer(t, func(c *config.Config) {
		c.TURN = config.TURN{URIs: "turn:t.example:3478", SharedSecret: "0123456789abcdef", UserLifetime: "1h"}
	}, func(a *API) []func() []Route { return nil })
	r = e.do("GET", "/_matrix/client/v3/voip/turnServer", "alice-token", nil)
	e.want(r, 200, "")
	if !strings.HasSuffix(r.str("username"), ":@alice:test") || r.str("password") == "" || r.body["ttl"] != float64(3600) {
		t.Fatalf("configured: %s", r.raw)
	}
	e.want(e.do("GET", "/_matrix/client/v3/voip/turnServer", "", nil), 401, "M_MISSING_TOKEN")
}
