package mediaapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestPreviewAddresses(t *testing.T) {
	o := PreviewOptions{Allowed: mustPrefixes("10.1.2.3/32"), Denied: mustPrefixes("8.8.4.0/24")}
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "1.1.1.1": true, "2606:4700::1111": true,
		"127.0.0.1": false, "127.1.2.3": false, "10.0.0.1": false, "172.16.5.4": false, "192.168.1.1": false,
		"169.254.169.254": false, "100.64.0.1": false, "0.0.0.0": false, "224.0.0.1": false, "255.255.255.255": false,
		"::1": false, "::": false, "fe80::1": false, "fd00::1": false, "ff02::1": false,
		"::ffff:10.0.0.1": false, "::ffff:8.8.8.8": true, "64:ff9b::a00:1": false, "2002:a00:1::1": false,
		"10.1.2.3": true, "8.8.4.4": false,
	} {
		if got := o.addrAllowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: allowed %v, want %v", addr, got, want)
		}
	}
}

// TestPreviewClientChecksTheConnectedAddress: the address is checked when
// connecting, after name resolution and after redirects, so a name or a
// redirect leading to a denied address is refused.
func TestPreviewClientChecksTheConnectedAddress(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hop" {
			http.Redirect(w, r, "http://127.0.0.2:"+r.Host[strings.LastIndex(r.Host, ":")+1:]+"/", http.StatusFound)
			return
		}
		w.WriteHeader(204)
	}))
	defer srv.Close()
	get := func(o *PreviewOptions, u string) error {
		o.defaults(1 << 20)
		resp, err := previewClient(o).Get(u)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	if err := get(&PreviewOptions{}, "http://localhost:"+port+"/"); !errors.Is(err, errBlockedAddr) {
		t.Errorf("a name resolving to loopback: %v", err)
	}
	if err := get(&PreviewOptions{Allowed: mustPrefixes("127.0.0.1/32")}, srv.URL+"/"); err != nil {
		t.Errorf("an allowed address: %v", err)
	}
	// The first hop is allowed, the redirect leads to a denied address.
	if err := get(&PreviewOptions{Allowed: mustPrefixes("127.0.0.1/32")}, srv.URL+"/hop"); !errors.Is(err, errBlockedAddr) {
		t.Errorf("a redirect to a denied address: %v", err)
	}
	if err := get(&PreviewOptions{}, srv.URL+"/hop"); !errors.Is(err, errBlockedAddr) {
		t.Errorf("a denied first hop: %v", err)
	}
}

func TestParseOpenGraph(t *testing.T) {
	for _, c := range []struct {
		name, page string
		want       map[string]any
	}{
		{"og tags", `<html><head><meta property="og:title" content="T"><meta property="og:title" content="second">
<meta property="og:description" content="D"><meta name="og:site_name" content="S"><title>Other</title></head></html>`,
			map[string]any{"og:title": "T", "og:description": "D", "og:site_name": "S"}},
		{"fallbacks", `<head><title> A
  title </title><meta name="Description" content=" About it "></head><body><meta property="og:title" content="late"></body>`,
			map[string]any{"og:title": "A title", "og:description": "About it"}},
		{"nothing", `<p>just text`, map[string]any{}},
		{"not og", `<head><meta property="twitter:title" content="x"></head>`, map[string]any{}},
	} {
		if got := parseOpenGraph(strings.NewReader(c.page)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if got := truncate("aé", 2); got != "a" {
		t.Errorf("truncate: %q", got)
	}
}

func TestPreviewOff(t *testing.T) {
	s := &Service{preview: newPreview(PreviewOptions{}, 1<<20)}
	if _, err := s.Preview(context.Background(), "@a:x", "https://example.com"); err == nil || !strings.Contains(err.Error(), "M_UNRECOGNIZED") {
		t.Errorf("previews off: %v", err)
	}
}
