package push

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// pattern is a push rule glob, compiled once: '*' matches any run of
// characters, '?' exactly one; matching ignores case. Patterns without
// wildcards match by plain comparison.
type pattern struct {
	lower string // the pattern, lowered
	glob  bool
	// never: the pattern is too costly to evaluate (see maxPatternBytes)
	// and matches nothing.
	never bool
	// words matches the pattern between word boundaries anywhere in a
	// lowered text (content.body, display names).
	words *regexp.Regexp
}

// Limits of the patterns evaluated against every event. Matching costs up
// to the text's length times the pattern's (a glob's states, or a literal's
// partial matches), and it runs for every recipient of every event; a
// pattern longer than maxPatternBytes, or with more wildcards than
// maxPatternWildcards once runs of '*' are merged, matches nothing.
const (
	maxPatternBytes     = 512
	maxPatternWildcards = 16
)

func compilePattern(p string) pattern {
	lp := strings.ToLower(p)
	// A run of stars matches what one star matches.
	for strings.Contains(lp, "**") {
		lp = strings.ReplaceAll(lp, "**", "*")
	}
	pt := pattern{lower: lp, glob: strings.ContainsAny(lp, "*?")}
	if len(lp) > maxPatternBytes || strings.Count(lp, "*")+strings.Count(lp, "?") > maxPatternWildcards {
		pt.never = true
		return pt
	}
	if pt.glob {
		var b strings.Builder
		b.WriteString(`(?:^|[^\pL\pN_])(?:`)
		for _, r := range lp {
			switch r {
			case '*':
				b.WriteString(`.*?`)
			case '?':
				b.WriteString(`.`)
			default:
				b.WriteString(regexp.QuoteMeta(string(r)))
			}
		}
		b.WriteString(`)(?:[^\pL\pN_]|$)`)
		pt.words = regexp.MustCompile(`(?s)` + b.String())
	}
	return pt
}

// matchWhole tells whether the whole of s matches (case-insensitively).
func (p *pattern) matchWhole(s string) bool {
	if p.never {
		return false
	}
	if !p.glob {
		return strings.EqualFold(s, p.lower)
	}
	return globMatch(p.lower, strings.ToLower(s))
}

// matchWords tells whether the pattern occurs in lowered, between word
// boundaries (the start or end of the text, or a character that is not a
// letter, digit or underscore).
func (p *pattern) matchWords(lowered string) bool {
	if p.never {
		return false
	}
	if p.glob {
		return p.words.MatchString(lowered)
	}
	return containsWord(lowered, p.lower)
}

// containsWord finds word, a lowered literal, between word boundaries in s.
func containsWord(s, word string) bool {
	if word == "" {
		return false
	}
	for off := 0; off <= len(s)-len(word); {
		i := strings.Index(s[off:], word)
		if i < 0 {
			return false
		}
		start, end := off+i, off+i+len(word)
		if boundaryBefore(s, start) && boundaryAfter(s, end) {
			return true
		}
		_, size := utf8.DecodeRuneInString(s[start:])
		off = start + max(size, 1)
	}
	return false
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

func boundaryBefore(s string, i int) bool {
	if i == 0 {
		return true
	}
	r, _ := utf8.DecodeLastRuneInString(s[:i])
	return !isWordRune(r)
}

func boundaryAfter(s string, i int) bool {
	if i >= len(s) {
		return true
	}
	r, _ := utf8.DecodeRuneInString(s[i:])
	return !isWordRune(r)
}

// globMatch matches s against a glob of '*' and '?' (both already lowered),
// by runes, without backtracking beyond the last star.
func globMatch(glob, s string) bool {
	gi, si := 0, 0
	starG, starS := -1, 0
	for si < len(s) {
		if gi < len(glob) {
			gr, gsz := utf8.DecodeRuneInString(glob[gi:])
			sr, ssz := utf8.DecodeRuneInString(s[si:])
			switch {
			case gr == '*':
				starG, starS = gi, si
				gi += gsz
				continue
			case gr == '?' || gr == sr:
				gi += gsz
				si += ssz
				continue
			}
		}
		if starG < 0 {
			return false
		}
		// Let the last star swallow one more rune and try again.
		_, ssz := utf8.DecodeRuneInString(s[starS:])
		starS += ssz
		si = starS
		gi = starG + 1
	}
	for gi < len(glob) && glob[gi] == '*' {
		gi++
	}
	return gi == len(glob)
}
