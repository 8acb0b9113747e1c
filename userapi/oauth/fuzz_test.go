package oauth

import (
	"errors"
	"testing"
)

// FuzzRegistration: any body is a client or an *Error, never a panic.
func FuzzRegistration(f *testing.F) {
	for _, s := range []string{
		`{"client_uri":"https://app.example.com","redirect_uris":["https://app.example.com/cb"]}`,
		`{"client_uri":"https://example.com","application_type":"native","redirect_uris":["com.example.app:/cb","http://[::1]:80/cb"]}`,
		`{"client_uri":"http://localhost:1","redirect_uris":["http://localhost/%zz"]}`,
		`{"client_uri":"https://a","redirect_uris":[":/x","a.b:","a.b://c"]}`,
		`null`, `[]`, `{"redirect_uris":null}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := checkRegistration(body)
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("not an OAuth error: %v", err)
		}
		if err == nil && (c.ClientURI == "" || len(c.RedirectURIs) == 0) {
			t.Fatalf("accepted without client_uri or redirect_uris: %+v", c)
		}
	})
}

// FuzzScope: ParseScope returns a device ID of the allowed characters or
// invalid_scope.
func FuzzScope(f *testing.F) {
	f.Add("urn:matrix:client:api:* urn:matrix:client:device:ABC")
	f.Add("openid urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:x~y")
	f.Add("urn:matrix:client:device:\x00")
	f.Fuzz(func(t *testing.T, scope string) {
		dev, err := ParseScope(scope)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != ErrInvalidScope {
				t.Fatalf("error %v", err)
			}
			return
		}
		if !validDeviceID(dev) {
			t.Fatalf("device %q", dev)
		}
	})
}
