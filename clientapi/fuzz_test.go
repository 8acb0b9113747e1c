package clientapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/syncapi"
	"github.com/haven-chat/haven/userapi/keys"
	"github.com/haven-chat/haven/userapi/push"
	"github.com/haven-chat/haven/userapi/roomkeys"
)

// fuzzStub stands in for every service the fuzzed handlers call: it accepts
// whatever the handler passes on, and exercises what it was given (the
// compiled search filter), so the fuzz targets test the request parsing.
type fuzzStub struct{}

func (fuzzStub) Upload(context.Context, string, string, keys.UploadRequest) (map[string]int, error) {
	return map[string]int{}, nil
}
func (fuzzStub) Query(context.Context, string, map[string][]string, time.Duration) (*keys.QueryResponse, error) {
	return &keys.QueryResponse{}, nil
}
func (fuzzStub) ClaimKeys(context.Context, map[string]map[string]string, time.Duration) (*keys.ClaimResponse, error) {
	return &keys.ClaimResponse{}, nil
}
func (fuzzStub) UploadSigningKeys(context.Context, string, keys.SigningKeys, bool) error { return nil }
func (fuzzStub) UploadSignatures(context.Context, string, map[string]map[string]json.RawMessage) (map[string]map[string]json.RawMessage, error) {
	return nil, nil
}
func (fuzzStub) SendToDevice(context.Context, string, string, string, string, map[string]map[string]json.RawMessage) error {
	return nil
}
func (fuzzStub) KeyChanges(context.Context, string, string, string) ([]string, []string, error) {
	return nil, nil, nil
}
func (fuzzStub) Search(_ context.Context, req syncapi.SearchRequest) (*syncapi.SearchResponse, error) {
	if req.Match != nil {
		req.Match("m.room.message", "@alice:test", true)
		req.Match("", "", false)
	}
	return &syncapi.SearchResponse{}, nil
}
func (fuzzStub) UserDirectory(context.Context, string, string, int) (*syncapi.UserDirectoryResponse, error) {
	return &syncapi.UserDirectoryResponse{}, nil
}
func (fuzzStub) SetPusher(context.Context, string, string, push.SetPusherRequest) error { return nil }
func (fuzzStub) Pushers(context.Context, string) []push.Pusher                          { return nil }
func (fuzzStub) Notifications(context.Context, string, string, int, string) ([]push.Notification, string, error) {
	return nil, "", nil
}
func (fuzzStub) ClientEvents(context.Context, []string) (map[string]json.RawMessage, error) {
	return nil, nil
}
func (fuzzStub) CreateVersion(context.Context, string, string, json.RawMessage) (string, error) {
	return "1", nil
}
func (fuzzStub) Version(context.Context, string, string) (roomkeys.VersionInfo, error) {
	return roomkeys.VersionInfo{}, nil
}
func (fuzzStub) UpdateVersion(context.Context, string, string, roomkeys.VersionUpdate) error {
	return nil
}
func (fuzzStub) DeleteVersion(context.Context, string, string) error { return nil }
func (fuzzStub) PutKeys(context.Context, string, string, roomkeys.Keys) (roomkeys.Counts, error) {
	return roomkeys.Counts{}, nil
}
func (fuzzStub) Keys(context.Context, string, string, string, string) (roomkeys.Keys, error) {
	return roomkeys.Keys{}, nil
}
func (fuzzStub) DeleteKeys(context.Context, string, string, string, string) (roomkeys.Counts, error) {
	return roomkeys.Counts{}, nil
}
func (fuzzStub) Relations(context.Context, syncapi.RelationsRequest) (*syncapi.RelationsResponse, error) {
	return &syncapi.RelationsResponse{}, nil
}
func (fuzzStub) Threads(context.Context, syncapi.ThreadsRequest) (*syncapi.ThreadsResponse, error) {
	return &syncapi.ThreadsResponse{}, nil
}

// fuzzRouter is the router with the areas whose parsers are fuzzed.
func fuzzRouter() http.Handler {
	cfg := config.Default()
	cfg.ServerName = "test"
	cfg.RateLimits.Enabled = false
	log := logrus.New()
	log.SetOutput(io.Discard)
	api := &API{Cfg: cfg, Log: log, Auth: backupTestAuth{"alice-token": {UserID: "@alice:test", DeviceID: "ADEV"}}}
	var s fuzzStub
	api.Areas = []func() []Route{api.KeysArea(s), api.SearchArea(s), api.PushArea(s, s), api.RoomKeysArea(s), api.RelationsArea(s)}
	return api.Router()
}

// fuzzCheck sends one request and fails on a 5xx or an error answer that is
// not a Matrix error.
func fuzzCheck(t *testing.T, h http.Handler, req *http.Request) {
	req.Header.Set("Authorization", "Bearer alice-token")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("%s %s → %d %s", req.Method, req.URL, rec.Code, rec.Body.String())
	}
	if rec.Code >= 400 {
		var body struct {
			ErrCode *string `json:"errcode"`
			Error   *string `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.ErrCode == nil || body.Error == nil || !strings.HasPrefix(*body.ErrCode, "M_") {
			t.Fatalf("%s %s → %d, not a Matrix error: %s", req.Method, req.URL, rec.Code, rec.Body.String())
		}
	}
}

// fuzzBody fuzzes the request body of one route.
func fuzzBody(f *testing.F, method, path string, seeds ...string) {
	for _, s := range append(seeds, ``, `{}`, `[]`, `null`, `{"a":`, "{\"a\":\"\xff\"}") {
		f.Add([]byte(s))
	}
	h := fuzzRouter()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(method, path, strings.NewReader(string(body)))
		fuzzCheck(t, h, req)
	})
}

func FuzzKeysUploadBody(f *testing.F) {
	fuzzBody(f, "POST", "/_matrix/client/v3/keys/upload",
		`{"device_keys":{"user_id":"@alice:test","device_id":"ADEV","algorithms":["m.olm.v1.curve25519-aes-sha2"],"keys":{"curve25519:ADEV":"k","ed25519:ADEV":"k"},"signatures":{"@alice:test":{"ed25519:ADEV":"s"}}}}`,
		`{"one_time_keys":{"signed_curve25519:AAAA":{"key":"k","signatures":{"@alice:test":{"ed25519:ADEV":"s"}}},"curve25519:B":"k"}}`,
		`{"fallback_keys":{"signed_curve25519:F":{"key":"k","fallback":true}},"org.matrix.msc2732.fallback_keys":{}}`,
		`{"device_keys":"x","one_time_keys":[],"fallback_keys":7}`)
}

func FuzzKeysQueryBody(f *testing.F) {
	fuzzBody(f, "POST", "/_matrix/client/v3/keys/query",
		`{"device_keys":{"@alice:test":[],"@bob:test":["BDEV"]},"timeout":10000}`,
		`{"device_keys":{"@alice:test":null}}`, `{"device_keys":{"":[""]}}`, `{"device_keys":[]}`)
}

func FuzzKeysClaimBody(f *testing.F) {
	fuzzBody(f, "POST", "/_matrix/client/v3/keys/claim",
		`{"one_time_keys":{"@alice:test":{"ADEV":"signed_curve25519"}},"timeout":10000}`,
		`{"one_time_keys":{"@alice:test":{"ADEV":7}}}`, `{"one_time_keys":{"@alice:test":null}}`)
}

func FuzzSearchBody(f *testing.F) {
	fuzzBody(f, "POST", "/_matrix/client/v3/search",
		`{"search_categories":{"room_events":{"search_term":"hello","keys":["content.body"],"order_by":"recent","filter":{"limit":10,"rooms":["!r:test"],"types":["m.*"],"not_senders":["@x:test"],"contains_url":true},"event_context":{"before_limit":1,"after_limit":2,"include_profile":true},"include_state":true,"groupings":{"group_by":[{"key":"room_id"}]}}}}`,
		`{"search_categories":{"room_events":{"search_term":null}}}`,
		`{"search_categories":{"room_events":{"search_term":"x","filter":"str","event_context":{"before_limit":-1}}}}`,
		`{"search_categories":{"room_events":{"search_term":"x","filter":{"limit":-5,"types":[1]}}}}`)
}

func FuzzPushersSetBody(f *testing.F) {
	fuzzBody(f, "POST", "/_matrix/client/v3/pushers/set",
		`{"pushkey":"pk","kind":"http","app_id":"im.app","app_display_name":"App","device_display_name":"Phone","lang":"en","data":{"url":"https://push.example/_matrix/push/v1/notify","format":"event_id_only"},"append":false}`,
		`{"pushkey":"pk","kind":null,"app_id":"im.app"}`,
		`{"pushkey":"pk","kind":"email","app_id":"m.email","data":"x"}`)
}

func FuzzRoomKeysBody(f *testing.F) {
	seeds := []string{
		`{"rooms":{"!r:test":{"sessions":{"s1":{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{"ciphertext":"c"}}}}}}`,
		`{"sessions":{"s1":{"first_message_index":-1,"forwarded_count":1e300,"session_data":"x"}}}`,
		`{"first_message_index":0,"forwarded_count":0,"is_verified":true,"session_data":{}}`,
	}
	for _, s := range append(seeds, ``, `{}`, `[]`, `null`, `{"rooms":{"":null}}`) {
		for _, scope := range []string{"", "/!r:test", "/!r:test/s1"} {
			f.Add(scope, []byte(s))
		}
	}
	h := fuzzRouter()
	f.Fuzz(func(t *testing.T, scope string, body []byte) {
		path := "/_matrix/client/v3/room_keys/keys"
		for _, seg := range strings.Split(strings.TrimPrefix(scope, "/"), "/") {
			if seg != "" {
				path += "/" + url.PathEscape(seg)
			}
		}
		req := httptest.NewRequest("PUT", path+"?version=1", strings.NewReader(string(body)))
		fuzzCheck(t, h, req)
	})
}

func FuzzRelationsQuery(f *testing.F) {
	for _, s := range []struct{ relType, query string }{
		{"", "limit=10&dir=f&from=x&to=y&recurse=true"},
		{"m.thread", "limit=-1"},
		{"m.annotation/m.reaction", "limit=999999999999999999999&dir=x"},
		{"m.reference", "recurse=maybe&limit=1&limit=2"},
		{"", "limit=%00&from=%FF"},
		{"", "include=all&limit=5&from=abc"},
	} {
		f.Add(s.relType, s.query)
	}
	h := fuzzRouter()
	f.Fuzz(func(t *testing.T, rel, query string) {
		for _, base := range []string{"/_matrix/client/v1/rooms/!r:test/relations/$e", "/_matrix/client/v1/rooms/!r:test/threads"} {
			path := base
			if strings.HasSuffix(base, "/$e") {
				for _, seg := range strings.SplitN(rel, "/", 2) {
					if seg != "" {
						path += "/" + url.PathEscape(seg)
					}
				}
			}
			req := httptest.NewRequest("GET", path, nil)
			req.URL.RawQuery = query
			fuzzCheck(t, h, req)
		}
	})
}
