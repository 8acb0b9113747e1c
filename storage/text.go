package storage

import (
	"strings"
	"unicode/utf8"
)

// StorableText tells whether both databases can hold s as text: no NUL
// byte and valid UTF-8 (PostgreSQL refuses anything else with an error).
// An ID that fails it names nothing that is stored.
func StorableText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}
