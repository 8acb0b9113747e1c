package keys

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/federationapi/origin"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

type authSetup struct {
	*remoteSetup
	url string
}

// setupAuth serves, as a.test, a handler behind Authenticate that echoes
// the origin and the body it was given.
func setupAuth(t *testing.T, db *storage.DB) *authSetup {
	rs := setupRemote(t, db, time.Hour)
	allowed := func(s string) bool { return s != "blocked.test" }
	h := Authenticate(rs.store, "a.test", allowed)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_ = json.NewEncoder(w).Encode(map[string]string{"origin": origin.From(r.Context()), "body": string(body)})
	}))
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return &authSetup{remoteSetup: rs, url: hs.URL}
}

// signedRequest builds a request signed by from (with key), for dest,
// aimed at the test server.
func (as *authSetup) request(t *testing.T, method, from, dest, uri string, key serverkey.Key, content any) *http.Request {
	t.Helper()
	fr := fclient.NewFederationRequest(method, spec.ServerName(from), spec.ServerName(dest), uri)
	if content != nil {
		if err := fr.SetContent(content); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(spec.ServerName(from), key.ID, key.Private); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(as.url)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Scheme, req.URL.Host, req.Host = u.Scheme, u.Host, u.Host
	return req
}

func do(t *testing.T, req *http.Request) (int, map[string]string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]string
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return resp.StatusCode, out
}

func TestAuthenticate(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		as := setupAuth(t, db)
		bKey := as.bKey.Key
		content := map[string]any{"pdus": []any{}, "edus": []any{map[string]any{"edu_type": "m.typing"}}}

		t.Run("good", func(t *testing.T) {
			req := as.request(t, "PUT", "b.test", "a.test", "/_matrix/federation/v1/send/1?x=%20y", bKey, content)
			code, out := do(t, req)
			if code != http.StatusOK || out["origin"] != "b.test" {
				t.Fatalf("%d %v", code, out)
			}
			want, _ := json.Marshal(content)
			if out["body"] != string(want) {
				t.Fatalf("handler got body %q, want %q", out["body"], want)
			}
		})
		t.Run("good GET, no destination in the header", func(t *testing.T) {
			req := as.request(t, "GET", "b.test", "a.test", "/_matrix/federation/v1/event/$e", bKey, nil)
			h := req.Header.Get("Authorization")
			i := strings.Index(h, `,destination=`)
			req.Header.Set("Authorization", h[:i])
			if code, out := do(t, req); code != http.StatusOK || out["origin"] != "b.test" {
				t.Fatalf("%d %v", code, out)
			}
		})
		t.Run("one good header of several", func(t *testing.T) {
			req := as.request(t, "GET", "b.test", "a.test", "/_matrix/federation/v1/version", bKey, nil)
			req.Header.Add("Authorization", `X-Matrix origin="b.test",key="ed25519:gone",sig="AAAA",destination="a.test"`)
			req.Header.Add("Authorization", `Bearer something`)
			if code, out := do(t, req); code != http.StatusOK {
				t.Fatalf("%d %v", code, out)
			}
		})
		unauthorized := map[string]func() *http.Request{
			"tampered body": func() *http.Request {
				req := as.request(t, "PUT", "b.test", "a.test", "/_matrix/federation/v1/send/2", bKey, content)
				body := []byte(`{"pdus":[],"edus":[]}`)
				req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
				return req
			},
			"tampered path": func() *http.Request {
				req := as.request(t, "GET", "b.test", "a.test", "/_matrix/federation/v1/event/$a", bKey, nil)
				req.URL.Path = "/_matrix/federation/v1/event/$b"
				return req
			},
			"wrong destination": func() *http.Request {
				return as.request(t, "GET", "b.test", "c.test", "/_matrix/federation/v1/version", bKey, nil)
			},
			"unknown key": func() *http.Request {
				return as.request(t, "GET", "b.test", "a.test", "/_matrix/federation/v1/version", newKey(t, "ed25519:other"), nil)
			},
			"right key ID, wrong key": func() *http.Request {
				return as.request(t, "GET", "b.test", "a.test", "/_matrix/federation/v1/version", newKey(t, string(bKey.ID)), nil)
			},
			"missing header": func() *http.Request {
				req := as.request(t, "GET", "b.test", "a.test", "/_matrix/federation/v1/version", bKey, nil)
				req.Header.Del("Authorization")
				return req
			},
			"malformed header": func() *http.Request {
				req := as.request(t, "GET", "b.test", "a.test", "/_matrix/federation/v1/version", bKey, nil)
				req.Header.Set("Authorization", `X-Matrix origin="b.test",key="ed25519:b1"`)
				return req
			},
			"two origins": func() *http.Request {
				req := as.request(t, "GET", "b.test", "a.test", "/_matrix/federation/v1/version", bKey, nil)
				req.Header.Add("Authorization", `X-Matrix origin="c.test",key="ed25519:c",sig="AAAA"`)
				return req
			},
		}
		for name, build := range unauthorized {
			t.Run(name, func(t *testing.T) {
				code, out := do(t, build())
				if code != http.StatusUnauthorized || out["errcode"] != "M_UNAUTHORIZED" {
					t.Fatalf("%d %v, want 401 M_UNAUTHORIZED", code, out)
				}
			})
		}
		t.Run("not allowed origin: 403 without a fetch", func(t *testing.T) {
			before := as.fetch.count.Load()
			req := as.request(t, "PUT", "blocked.test", "a.test", "/_matrix/federation/v1/send/3", newKey(t, "ed25519:x"), content)
			code, out := do(t, req)
			if code != http.StatusForbidden || out["errcode"] != "M_FORBIDDEN" {
				t.Fatalf("%d %v, want 403 M_FORBIDDEN", code, out)
			}
			if n := as.fetch.count.Load() - before; n != 0 {
				t.Fatalf("%d fetches for a refused origin", n)
			}
		})
		t.Run("body too large", func(t *testing.T) {
			req := as.request(t, "PUT", "b.test", "a.test", "/_matrix/federation/v1/send/4", bKey, content)
			big := bytes.Repeat([]byte(" "), MaxRequestBytes+1)
			req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(big)), int64(len(big))
			if code, out := do(t, req); code != http.StatusRequestEntityTooLarge {
				t.Fatalf("%d %v", code, out)
			}
		})
		t.Run("body not JSON", func(t *testing.T) {
			req := as.request(t, "PUT", "b.test", "a.test", "/_matrix/federation/v1/send/5", bKey, content)
			body := []byte(`{"pdus":`)
			req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
			if code, out := do(t, req); code != http.StatusBadRequest || out["errcode"] != "M_NOT_JSON" {
				t.Fatalf("%d %v", code, out)
			}
		})
	})
}

func TestParseXMatrix(t *testing.T) {
	for _, tc := range []struct {
		in      string
		ok, bad bool
		want    XMatrix
	}{
		{in: `X-Matrix origin="a.test",destination="b.test",key="ed25519:1",sig="c2ln"`, ok: true,
			want: XMatrix{Origin: "a.test", Destination: "b.test", Key: "ed25519:1", Sig: "c2ln"}},
		{in: `X-Matrix origin=a.test,key="ed25519:1",sig=c2ln`, ok: true,
			want: XMatrix{Origin: "a.test", Key: "ed25519:1", Sig: "c2ln"}},
		{in: `x-matrix  Origin = "a.test" , KEY="ed25519:1",sig="c2ln", other="x,y"`, ok: true,
			want: XMatrix{Origin: "a.test", Key: "ed25519:1", Sig: "c2ln"}},
		{in: `X-Matrix origin="a\"b.test",key="ed25519:1",sig="s"`, ok: true,
			want: XMatrix{Origin: `a"b.test`, Key: "ed25519:1", Sig: "s"}},
		{in: `Bearer abc`},
		{in: ``},
		{in: `X-Matrix`, ok: true, bad: true},
		{in: `X-Matrix origin="a.test",key="ed25519:1"`, ok: true, bad: true},
		{in: `X-Matrix origin="a.test,key="ed25519:1",sig="s"`, ok: true, bad: true},
		{in: `X-Matrix origin="a.test",origin="b.test",key="ed25519:1",sig="s"`, ok: true, bad: true},
		{in: `X-Matrix origin "a.test",key="ed25519:1",sig="s"`, ok: true, bad: true},
		{in: `X-Matrix origin="a.test"x,key="ed25519:1",sig="s"`, ok: true, bad: true},
	} {
		got, ok, err := ParseXMatrix(tc.in)
		if ok != tc.ok || (err != nil) != tc.bad {
			t.Errorf("%q: ok %v err %v; want ok %v bad %v", tc.in, ok, err, tc.ok, tc.bad)
			continue
		}
		if got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func FuzzParseXMatrix(f *testing.F) {
	for _, s := range []string{
		`X-Matrix origin="a.test",destination="b.test",key="ed25519:1",sig="c2ln"`,
		`X-Matrix origin=a.test,key=ed25519:1,sig=c2ln`,
		`X-Matrix origin="a\"b",key="k",sig="s",x=","`,
		`Bearer x`, `X-Matrix ,,,`, `X-Matrix origin=`, `X-Matrix a="\`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		x, ok, err := ParseXMatrix(in)
		if !ok || err != nil {
			return
		}
		if x.Origin == "" || x.Key == "" || x.Sig == "" {
			t.Fatalf("%q parsed without a required field: %+v", in, x)
		}
		// What parsed formats back into a header that parses the same.
		again := "X-Matrix origin=" + quote(x.Origin) + ",key=" + quote(string(x.Key)) + ",sig=" + quote(x.Sig)
		if x.Destination != "" {
			again += ",destination=" + quote(x.Destination)
		}
		y, ok, err := ParseXMatrix(again)
		if !ok || err != nil || y != x {
			t.Fatalf("%q → %+v → %q → %+v (%v)", in, x, again, y, err)
		}
	})
}
