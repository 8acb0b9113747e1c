package mediaapi

import (
	"mime"
	"strings"
	"unicode/utf8"
)

// inlineSafe are the content types the spec lets a server serve with
// Content-Disposition: inline ("Serving inline content"). Everything else
// is served as an attachment.
var inlineSafe = map[string]bool{
	"text/css":            true,
	"text/plain":          true,
	"text/csv":            true,
	"application/json":    true,
	"application/ld+json": true,
	"image/jpeg":          true,
	"image/gif":           true,
	"image/png":           true,
	"image/apng":          true,
	"image/webp":          true,
	"image/avif":          true,
	"video/mp4":           true,
	"video/webm":          true,
	"video/ogg":           true,
	"video/quicktime":     true,
	"audio/mp4":           true,
	"audio/webm":          true,
	"audio/aac":           true,
	"audio/mpeg":          true,
	"audio/ogg":           true,
	"audio/wave":          true,
	"audio/wav":           true,
	"audio/x-wav":         true,
	"audio/x-pn-wav":      true,
	"audio/flac":          true,
	"audio/x-flac":        true,
}

// ContentSecurityPolicy is sent with every download and thumbnail: nothing
// served from the media repository may run script or load anything.
const ContentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// DefaultContentType is the type of an upload that names none (or an invalid one).
const DefaultContentType = "application/octet-stream"

const (
	maxContentTypeLen = 255
	// MaxFilenameBytes is the longest file name an upload may carry.
	MaxFilenameBytes = 255
)

// NormalizeContentType returns the content type to store for an upload's
// Content-Type header: the header as sent when it is a valid media type,
// otherwise application/octet-stream. The spec wants the same type (or a
// reasonably close one) back on download.
func NormalizeContentType(header string) string {
	header = strings.TrimSpace(header)
	if header == "" || len(header) > maxContentTypeLen || !printableASCII(header) {
		return DefaultContentType
	}
	mt, params, err := mime.ParseMediaType(header)
	if err != nil || !strings.Contains(mt, "/") {
		return DefaultContentType
	}
	// Re-render: lower-case type, canonical parameters, nothing a header
	// could be split with.
	out := mime.FormatMediaType(mt, params)
	if out == "" {
		return mt
	}
	return out
}

// baseType is the media type without parameters, lower-cased.
func baseType(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return ""
	}
	return mt
}

// InlineSafe reports whether content of this type may be shown inline.
func InlineSafe(contentType string) bool { return inlineSafe[baseType(contentType)] }

// ValidFilename reports whether an upload's file name can be kept: valid
// UTF-8, no control characters, at most MaxFilenameBytes bytes.
func ValidFilename(name string) bool {
	if len(name) > MaxFilenameBytes || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// ContentDisposition is the Content-Disposition of a download: inline for
// the inline-safe types, attachment for the rest, with the file name (if
// any) as a quoted ASCII string or, when it needs more, RFC 6266's
// filename*=utf-8”percent-encoded form.
func ContentDisposition(contentType, filename string) string {
	disp := "attachment"
	if InlineSafe(contentType) {
		disp = "inline"
	}
	return DispositionWithName(disp, filename)
}

// DispositionWithName renders disposition (inline or attachment) with a file name.
func DispositionWithName(disp, filename string) string {
	if filename == "" || !utf8.ValidString(filename) {
		return disp
	}
	if plainQuotable(filename) {
		return disp + `; filename="` + filename + `"`
	}
	return disp + "; filename*=utf-8''" + encodeExtValue(filename)
}

// plainQuotable reports whether s can go in a quoted-string as it is:
// printable ASCII without quote or backslash (no escaping needed, which
// some clients get wrong) and not looking like an encoded value.
func plainQuotable(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '%' {
			return false
		}
	}
	return true
}

// encodeExtValue percent-encodes every byte that is not an RFC 5987 attr-char.
func encodeExtValue(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) * 3)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAttrChar(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func isAttrChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '&', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ValidMediaID reports whether id may name media: 1 to 255 characters of
// A-Z, a-z, 0-9, _ and - (the spec's rule against path traversal).
func ValidMediaID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
