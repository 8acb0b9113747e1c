package mediaapi

import (
	"mime"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestNormalizeContentType(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "application/octet-stream"},
		{"image/png", "image/png"},
		{"IMAGE/PNG", "image/png"},
		{"  text/plain; charset=UTF-8 ", "text/plain; charset=UTF-8"},
		{"text/html", "text/html"},
		{"nonsense", "application/octet-stream"},
		{"image/png\r\nX-Evil: 1", "application/octet-stream"},
		{"image/png; name=\"a\"b", "application/octet-stream"},
		{"text/plain; charset=\"ünï\"", "application/octet-stream"},
		{strings.Repeat("a", 300) + "/b", "application/octet-stream"},
	} {
		if got := NormalizeContentType(tc.in); got != tc.want {
			t.Errorf("NormalizeContentType(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestContentDisposition(t *testing.T) {
	for _, tc := range []struct{ ct, name, want string }{
		{"image/png", "", "inline"},
		{"image/png", "cat.png", `inline; filename="cat.png"`},
		{"image/jpeg", "my photo.jpg", `inline; filename="my photo.jpg"`},
		{"text/plain; charset=utf-8", "notes.txt", `inline; filename="notes.txt"`},
		{"video/mp4", "v.mp4", `inline; filename="v.mp4"`},
		{"audio/ogg", "", "inline"},
		{"application/json", "a.json", `inline; filename="a.json"`},
		// Script-capable types are never inline.
		{"text/html", "page.html", `attachment; filename="page.html"`},
		{"text/html; charset=utf-8", "", "attachment"},
		{"image/svg+xml", "x.svg", `attachment; filename="x.svg"`},
		{"application/xhtml+xml", "", "attachment"},
		{"application/javascript", "a.js", `attachment; filename="a.js"`},
		{"application/octet-stream", "a.bin", `attachment; filename="a.bin"`},
		{"application/pdf", "a.pdf", `attachment; filename="a.pdf"`},
		// Names that need encoding use filename*.
		{"image/png", "Ünïcödé.png", "inline; filename*=utf-8''%C3%9Cn%C3%AFc%C3%B6d%C3%A9.png"},
		{"image/png", `a"b.png`, "inline; filename*=utf-8''a%22b.png"},
		{"image/png", `a\b.png`, "inline; filename*=utf-8''a%5Cb.png"},
		{"image/png", "100%.png", "inline; filename*=utf-8''100%25.png"},
		{"image/png", "a;b=c.png", `inline; filename="a;b=c.png"`},
		{"image/png", "new\nline", "inline; filename*=utf-8''new%0Aline"},
		{"image/png", "bad\xffutf8", "inline"},
	} {
		if got := ContentDisposition(tc.ct, tc.name); got != tc.want {
			t.Errorf("ContentDisposition(%q, %q) = %q, want %q", tc.ct, tc.name, got, tc.want)
		}
	}
}

func TestValidMediaIDAndFilename(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"abcXYZ019_-", true},
		{"", false},
		{"../etc/passwd", false},
		{"a.b", false},
		{"a/b", false},
		{"a%2Fb", false},
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false},
		{"ä", false},
	} {
		if got := ValidMediaID(tc.id); got != tc.ok {
			t.Errorf("ValidMediaID(%q) = %v", tc.id, got)
		}
	}
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"", true},
		{"War and Peace.pdf", true},
		{"日本語.txt", true},
		{"tab\there", false},
		{"nul\x00", false},
		{"c1\u0085", false},
		{"bad\xff", false},
		{strings.Repeat("é", 128), false}, // 256 bytes
		{strings.Repeat("e", 255), true},
	} {
		if got := ValidFilename(tc.name); got != tc.ok {
			t.Errorf("ValidFilename(%q) = %v", tc.name, got)
		}
	}
}

// checkHeaderValue fails on anything that could break out of a header.
func checkHeaderValue(t *testing.T, what, v string) {
	t.Helper()
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			t.Fatalf("%s has byte %#x: %q", what, v[i], v)
		}
	}
}

func FuzzContentDisposition(f *testing.F) {
	for _, seed := range [][2]string{
		{"image/png", "cat.png"},
		{"text/html", "a\"b\\c"},
		{"text/plain; charset=utf-8", "Ünïcödé 100%.txt"},
		{"image/svg+xml", "\r\nSet-Cookie: x"},
		{"", ""},
		{"a/b; x=\"", "\xff\xfe"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, contentType, filename string) {
		ct := NormalizeContentType(contentType)
		checkHeaderValue(t, "content type", ct)
		if _, _, err := mime.ParseMediaType(ct); err != nil {
			t.Fatalf("normalized type %q does not parse: %v", ct, err)
		}
		if NormalizeContentType(ct) != ct {
			t.Fatalf("normalizing %q again changes it", ct)
		}
		d := ContentDisposition(ct, filename)
		checkHeaderValue(t, "disposition", d)
		disp, params, err := mime.ParseMediaType(d)
		if err != nil {
			t.Fatalf("disposition %q does not parse: %v", d, err)
		}
		if disp != "inline" && disp != "attachment" {
			t.Fatalf("disposition %q", d)
		}
		if disp == "inline" && !InlineSafe(ct) {
			t.Fatalf("%q served inline", ct)
		}
		if b := baseType(ct); disp == "inline" && (strings.Contains(b, "html") || strings.Contains(b, "svg") || strings.Contains(b, "xml") || strings.Contains(b, "javascript")) {
			t.Fatalf("script-capable %q served inline", ct)
		}
		if filename != "" && utf8.ValidString(filename) {
			if params["filename"] != filename {
				t.Fatalf("file name %q came back as %q from %q", filename, params["filename"], d)
			}
		}
	})
}
