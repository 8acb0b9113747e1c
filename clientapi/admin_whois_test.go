package clientapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// whois shows, per device, the User-Agent of the client that signed it in.
func TestAdminWhoisUserAgent(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := adminServer(t, db)
		login := func(device, ua string) {
			body, _ := json.Marshal(map[string]any{"type": "m.login.password", "device_id": device,
				"identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "alice-password"})
			req, _ := http.NewRequest("POST", e.url+"/_matrix/client/v3/login", bytes.NewReader(body))
			req.Header.Set("User-Agent", ua)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Fatalf("login %d", res.StatusCode)
			}
		}
		login("PHONE", "Element/1.11.40 (Android 14)")
		login("LONG", strings.Repeat("x", 2000))
		alice := url.PathEscape("@alice:test.local")
		r := e.do("GET", "/_synapse/admin/v1/whois/"+alice, e.adminToken, nil)
		e.want(r, 200, "")
		var body struct {
			Devices map[string]struct {
				Sessions []struct {
					Connections []struct {
						IP        string `json:"ip"`
						UserAgent string `json:"user_agent"`
					} `json:"connections"`
				} `json:"sessions"`
			} `json:"devices"`
		}
		if err := json.Unmarshal([]byte(r.raw), &body); err != nil {
			t.Fatal(err)
		}
		ua := func(d string) string { return body.Devices[d].Sessions[0].Connections[0].UserAgent }
		if ua("PHONE") != "Element/1.11.40 (Android 14)" || len(ua("LONG")) != 512 {
			t.Fatalf("whois %s", r.raw)
		}
		// Signing in again with another client replaces it.
		login("PHONE", "Element X/25.1")
		r = e.do("GET", "/_synapse/admin/v1/whois/"+alice, e.adminToken, nil)
		if !strings.Contains(r.raw, `"user_agent":"Element X/25.1"`) {
			t.Fatalf("whois after a new sign-in %s", r.raw)
		}
		e.want(e.do("GET", "/_synapse/admin/v1/whois/"+url.PathEscape("@root:test.local"), e.userToken, nil), 403, "M_FORBIDDEN")
		// The admin device listing has it as last_seen_user_agent.
		r = e.do("GET", "/_synapse/admin/v2/users/"+alice+"/devices/PHONE", e.adminToken, nil)
		if r.str("last_seen_user_agent") != "Element X/25.1" {
			t.Fatalf("device %s", r.raw)
		}
		r = e.do("GET", "/_synapse/admin/v2/users/"+alice+"/devices", e.adminToken, nil)
		if !strings.Contains(r.raw, `"last_seen_user_agent":"Element X/25.1"`) {
			t.Fatalf("devices %s", r.raw)
		}
	})
}
