package clientapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/keys"
)

type keysTestAuth struct{}

func (keysTestAuth) Authenticate(_ context.Context, token string) (userapi.Device, error) {
	if token != "tok" {
		return userapi.Device{}, merr.UnknownToken(false, "Unknown token")
	}
	return userapi.Device{UserID: "@a:x", DeviceID: "DEV"}, nil
}

// keysTestService records what the handlers pass on.
type keysTestService struct {
	uploaded  keys.UploadRequest
	sent      []string
	needAuth  bool
	uiaCalled bool
	// claimTimeouts are the waits for other servers of the claims.
	claimTimeouts []time.Duration
}

func (f *keysTestService) Upload(_ context.Context, userID, deviceID string, req keys.UploadRequest) (map[string]int, error) {
	f.uploaded = req
	return map[string]int{"signed_curve25519": len(req.OneTimeKeys)}, nil
}
func (f *keysTestService) Query(_ context.Context, requester string, want map[string][]string, _ time.Duration) (*keys.QueryResponse, error) {
	return &keys.QueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}}, nil
}
func (f *keysTestService) ClaimKeys(_ context.Context, want map[string]map[string]string, timeout time.Duration) (*keys.ClaimResponse, error) {
	f.claimTimeouts = append(f.claimTimeouts, timeout)
	return &keys.ClaimResponse{}, nil
}
func (f *keysTestService) UploadSigningKeys(_ context.Context, _ string, _ keys.SigningKeys, authed bool) error {
	if f.needAuth && !authed {
		return keys.ErrAuthNeeded
	}
	return nil
}
func (f *keysTestService) UploadSignatures(context.Context, string, map[string]map[string]json.RawMessage) (map[string]map[string]json.RawMessage, error) {
	return map[string]map[string]json.RawMessage{}, nil
}
func (f *keysTestService) SendToDevice(_ context.Context, sender, senderDevice, evType, txnID string, _ map[string]map[string]json.RawMessage) error {
	f.sent = append(f.sent, sender+"|"+senderDevice+"|"+evType+"|"+txnID)
	return nil
}
func (f *keysTestService) KeyChanges(_ context.Context, userID, from, to string) ([]string, []string, error) {
	return []string{userID}, []string{}, nil
}

func TestKeysHandlers(t *testing.T) {
	cfg := config.Default()
	cfg.ServerName = "x"
	log := logrus.New()
	log.SetOutput(io.Discard)
	fk := &keysTestService{}
	api := &API{Cfg: cfg, Log: log, Auth: keysTestAuth{}}
	api.Areas = append(api.Areas, api.KeysArea(fk))
	srv := httptest.NewServer(api.Router())
	defer srv.Close()
	const v = "/_matrix/client/v3"
	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		errcode, contains               string
	}{
		{"upload", "POST", v + "/keys/upload", "tok", `{"one_time_keys":{"signed_curve25519:a":{"key":"k"}},"org.matrix.msc2732.fallback_keys":{"signed_curve25519:f":{"key":"f"}}}`, 200, "", `"signed_curve25519":1`},
		{"upload other device", "POST", v + "/keys/upload/OTHER", "tok", `{}`, 400, "M_INVALID_PARAM", ""},
		{"upload no token", "POST", v + "/keys/upload", "", `{}`, 401, "M_MISSING_TOKEN", ""},
		{"upload bad token", "POST", v + "/keys/upload", "nope", `{}`, 401, "M_UNKNOWN_TOKEN", ""},
		{"upload not json", "POST", v + "/keys/upload", "tok", `{`, 400, "M_NOT_JSON", ""},
		{"upload wrong type", "POST", v + "/keys/upload", "tok", `{"one_time_keys":[]}`, 400, "M_BAD_JSON", ""},
		{"query", "POST", v + "/keys/query", "tok", `{"device_keys":{"@b:x":[]}}`, 200, "", `"device_keys":{}`},
		{"query missing", "POST", v + "/keys/query", "tok", `{}`, 400, "M_MISSING_PARAM", ""},
		{"query wrong type", "POST", v + "/keys/query", "tok", `{"device_keys":{"@b:x":"DEV"}}`, 400, "M_BAD_JSON", ""},
		{"claim missing", "POST", v + "/keys/claim", "tok", `{}`, 400, "M_MISSING_PARAM", ""},
		{"claim", "POST", v + "/keys/claim", "tok", `{"one_time_keys":{"@b:x":{"D":"signed_curve25519"}}}`, 200, "", ""},
		{"claim timeout", "POST", v + "/keys/claim", "tok", `{"one_time_keys":{},"timeout":2500}`, 200, "", ""},
		{"claim long timeout", "POST", v + "/keys/claim", "tok", `{"one_time_keys":{},"timeout":3600000}`, 200, "", ""},
		{"claim bad timeout", "POST", v + "/keys/claim", "tok", `{"one_time_keys":{},"timeout":"soon"}`, 400, "M_BAD_JSON", ""},
		{"changes", "GET", v + "/keys/changes?from=s1&to=s2", "tok", ``, 200, "", `"changed":["@a:x"]`},
		{"changes without from", "GET", v + "/keys/changes", "tok", ``, 400, "M_MISSING_PARAM", ""},
		{"signing without auth", "POST", v + "/keys/device_signing/upload", "tok", `{"master_key":{}}`, 200, "", ""},
		{"signatures", "POST", v + "/keys/signatures/upload", "tok", `{"@a:x":{"DEV":{}}}`, 200, "", `"failures":{}`},
		{"signatures wrong type", "POST", v + "/keys/signatures/upload", "tok", `{"@a:x":[]}`, 400, "M_BAD_JSON", ""},
		{"to-device", "PUT", v + "/sendToDevice/m.test/t%201", "tok", `{"messages":{"@b:x":{"*":{}}}}`, 200, "", ""},
		{"to-device missing", "PUT", v + "/sendToDevice/m.test/t2", "tok", `{}`, 400, "M_MISSING_PARAM", ""},
		{"to-device wrong method", "POST", v + "/sendToDevice/m.test/t2", "tok", `{}`, 405, "M_UNRECOGNIZED", ""},
		{"to-device too large", "PUT", v + "/sendToDevice/m.test/t3", "tok", `{"messages":{"@b:x":{"*":{"x":"` + strings.Repeat("a", toDeviceBody) + `"}}}}`, 413, "M_TOO_LARGE", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var body map[string]any
			_ = json.Unmarshal(raw, &body)
			if resp.StatusCode != tc.status || (tc.errcode != "" && body["errcode"] != tc.errcode) {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, raw, tc.status, tc.errcode)
			}
			if tc.contains != "" && !strings.Contains(string(raw), tc.contains) {
				t.Fatalf("%s does not contain %s", raw, tc.contains)
			}
		})
	}
	if len(fk.uploaded.FallbackKeys) != 1 {
		t.Fatalf("the MSC2732 name of fallback_keys was not read: %+v", fk.uploaded)
	}
	if len(fk.sent) != 1 || fk.sent[0] != "@a:x|DEV|m.test|t 1" {
		t.Fatalf("sent %v", fk.sent)
	}
	// Claims wait 10 s for other servers unless they say otherwise (at most a minute).
	if want := []time.Duration{10 * time.Second, 2500 * time.Millisecond, time.Minute}; !slices.Equal(fk.claimTimeouts, want) {
		t.Fatalf("claim timeouts %v, want %v", fk.claimTimeouts, want)
	}

	// A cross-signing upload that needs auth asks for it (UIA 401 without errcode).
	fk.needAuth = true
	api2 := &API{Cfg: cfg, Log: log, Auth: keysTestAuth{}}
	h := &keysHandlers{svc: fk, checkUIA: func(context.Context, userapi.UIARequest) error {
		fk.uiaCalled = true
		return merr.Unauthorized("Additional authentication is required").With("flows", []any{}).With("session", "s")
	}}
	api2.Areas = append(api2.Areas, func() []Route {
		return []Route{{Method: "POST", Path: v + "/keys/device_signing/upload", H: uia(h.signingUpload), Auth: authUser}}
	})
	srv2 := httptest.NewServer(api2.Router())
	defer srv2.Close()
	req, _ := http.NewRequest("POST", srv2.URL+v+"/keys/device_signing/upload", strings.NewReader(`{"master_key":{}}`))
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !fk.uiaCalled || strings.Contains(string(raw), "errcode") || !strings.Contains(string(raw), `"session":"s"`) {
		t.Fatalf("UIA: %d %s", resp.StatusCode, raw)
	}
}
