package outbound

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// destKey is a destination's token in subjects and consumer names: its
// letters, digits and dashes (anything else becomes '_'), cut at 40, and a
// hash of the whole name that keeps names differing elsewhere apart
// ("matrix.org:8448" → "matrix_org_8448_3f1c0a9d2b7e"). The name itself
// is the consumer's description.
func destKey(dest string) string {
	var b strings.Builder
	for _, c := range dest {
		if b.Len() >= 40 {
			break
		}
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			b.WriteRune(c)
		case c >= 'A' && c <= 'Z':
			b.WriteRune(c - 'A' + 'a')
		default:
			b.WriteByte('_')
		}
	}
	sum := sha256.Sum256([]byte(dest))
	return b.String() + "_" + hex.EncodeToString(sum[:6])
}

// roomKey is a room's token in subjects: a hash of its ID (the ID itself
// travels in the message).
func roomKey(roomID string) string {
	sum := sha256.Sum256([]byte(roomID))
	return "r" + hex.EncodeToString(sum[:10])
}
