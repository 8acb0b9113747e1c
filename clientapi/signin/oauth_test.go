package signin

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/userapi/oauth"
)

// noOAuth stands for the OAuth service where the test never reaches it.
type noOAuth struct{}

func (noOAuth) Authorize(context.Context, url.Values) (oauth.AuthRequest, oauth.Client, error) {
	return oauth.AuthRequest{}, oauth.Client{}, nil
}
func (noOAuth) Client(context.Context, string) (oauth.Client, bool, error) {
	return oauth.Client{}, false, nil
}
func (noOAuth) IssueCode(context.Context, oauth.AuthRequest, string) (string, error) { return "", nil }

func TestSealedRequest(t *testing.T) {
	now := time.Unix(1800000000, 0)
	p := New(Options{CookieKey: []byte("0123456789abcdef0123456789abcdef"), OAuth: noOAuth{}, Now: func() time.Time { return now }})
	req := oauth.AuthRequest{ClientID: "C", RedirectURI: "https://app.example.com/cb", State: "s", DeviceID: "D", LoginHint: "mxid:@alice:example.com"}
	sealed := p.sealOAuth(req)
	if got, err := p.openOAuth(sealed); err != nil || got != req {
		t.Fatalf("open: %+v %v", got, err)
	}
	if got := p.loginHint(sealed); got != "@alice:example.com" {
		t.Fatalf("login hint %q", got)
	}
	other := New(Options{CookieKey: []byte("another key, another server......"), OAuth: noOAuth{}, Now: func() time.Time { return now }})
	i := strings.LastIndex(sealed, ".")
	for name, bad := range map[string]string{
		"changed payload": "x" + sealed[1:],
		"changed mac":     sealed[:len(sealed)-1] + "A",
		"no mac":          sealed[:i],
		"empty":           "",
		"other key":       other.sealOAuth(req),
		"huge":            strings.Repeat("a", 9<<10) + sealed[i:],
	} {
		if _, err := p.openOAuth(bad); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
	now = now.Add(authRequestLifetime + time.Second)
	if _, err := p.openOAuth(sealed); err == nil {
		t.Fatal("an expired request opened")
	}
	off := New(Options{CookieKey: []byte("0123456789abcdef0123456789abcdef")})
	if _, err := off.openOAuth(sealed); err == nil {
		t.Fatal("opened with the OAuth API off")
	}
}

func TestAccountQuery(t *testing.T) {
	q := accountQuery(url.Values{"action": {"org.matrix.session_end"}, "device_id": {"ABC"}, "other": {"x"}})
	if q.Encode() != "action=org.matrix.session_end&device_id=ABC" {
		t.Fatalf("query %s", q.Encode())
	}
	if q := accountQuery(url.Values{"device_id": {strings.Repeat("x", 300)}}); len(q) != 0 {
		t.Fatalf("long device_id kept: %v", q)
	}
}
