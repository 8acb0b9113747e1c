package filter

import "encoding/json"

// HasURL reports whether content, an event's content as JSON, is an
// object with a top-level "url" whose value is a string: the test
// contains_url filters on. It scans the bytes without decoding them and
// does not allocate unless the key is written with escapes. When a key
// repeats, the last one counts, as in encoding/json. For text that is not
// a JSON object it returns false; it never panics.
func HasURL(content []byte) bool {
	b := content
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return false
	}
	found := false
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		end, escaped, ok := scanString(b, i)
		if !ok {
			return false
		}
		var isURL bool
		if escaped {
			isURL = unescapedIs(b[i:end], "url")
		} else {
			isURL = string(b[i+1:end-1]) == "url"
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return false
		}
		if isURL {
			found = b[i] == '"'
		}
		if i, ok = skipValue(b, i); !ok {
			return false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return found
		default:
			return false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString reads the string starting at b[i] == '"' and returns the
// index just past its closing quote and whether it holds escapes.
func scanString(b []byte, i int) (end int, escaped, ok bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped, true
		}
	}
	return 0, false, false
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) (int, bool) {
	switch b[i] {
	case '"':
		end, _, ok := scanString(b, i)
		return end, ok
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, _, ok := scanString(b, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	default: // number, true, false, null
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j, j > i
			}
			j++
		}
		return j, j > i
	}
}

// unescapedIs decodes the JSON string quoted and compares it with want.
func unescapedIs(quoted []byte, want string) bool {
	var s string
	return json.Unmarshal(quoted, &s) == nil && s == want
}
