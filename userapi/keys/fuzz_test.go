package keys

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// wantMatrixErr fails unless err is nil or a Matrix error (anything else
// would become a 500).
func wantMatrixErr(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if _, ok := merr.As(err); !ok {
		t.Fatalf("%s: %v (%T) is not a Matrix error", what, err, err)
	}
}

// wantStorable fails when accepted text could not be stored in PostgreSQL.
func wantStorable(t *testing.T, what string, b []byte) {
	t.Helper()
	if !utf8.Valid(b) || !storage.StorableText(string(b)) {
		t.Fatalf("%s accepted text PostgreSQL cannot store: %q", what, b)
	}
}

// FuzzCheckDeviceKeys: a device_keys object is accepted or refused with a
// Matrix error, and what is stored is valid JSON text.
func FuzzCheckDeviceKeys(f *testing.F) {
	for _, s := range []string{
		`{"user_id":"@alice:test","device_id":"ADEV","algorithms":["m.olm.v1.curve25519-aes-sha2"],"keys":{"curve25519:ADEV":"c","ed25519:ADEV":"e"},"signatures":{"@alice:test":{"ed25519:ADEV":"s"}},"unsigned":{"x":1}}`,
		`{"user_id":"@alice:test","device_id":"ADEV","algorithms":[],"keys":{}}`,
		`{"user_id":7}`, `[]`, `null`, `"x"`, ``, `{"keys":{"ed25519:ADEV":"\u0000"},"signatures":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, stored, err := checkDeviceKeys(raw, "@alice:test", "ADEV")
		wantMatrixErr(t, "checkDeviceKeys", err)
		if err == nil {
			if !json.Valid(stored) {
				t.Fatalf("stored invalid JSON %q", stored)
			}
			wantStorable(t, "checkDeviceKeys", stored)
		}
	})
}

// FuzzOneTimeKey: one-time and fallback key IDs and values are accepted
// only when they can be stored.
func FuzzOneTimeKey(f *testing.F) {
	for _, s := range [][2]string{
		{"signed_curve25519:AAAA", `{"key":"k","signatures":{"@alice:test":{"ed25519:ADEV":"s"}}}`},
		{"curve25519:B", `"k"`}, {"x", `"k"`}, {":", `{}`}, {"a:\x00", `"\u0000"`}, {"a:b", `"\ud800"`}, {"a:\xff", `7`},
	} {
		f.Add(s[0], []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, id string, raw []byte) {
		alg, err := checkKeyID(id, "one_time_keys")
		wantMatrixErr(t, "checkKeyID", err)
		if err == nil {
			wantStorable(t, "checkKeyID", []byte(id))
			wantStorable(t, "checkKeyID algorithm", []byte(alg))
		}
		v, err := keyValue(raw, id, "one_time_keys")
		wantMatrixErr(t, "keyValue", err)
		if err == nil {
			if !json.Valid([]byte(v)) {
				t.Fatalf("keyValue stored invalid JSON %q", v)
			}
			wantStorable(t, "keyValue", []byte(v))
		}
	})
}

// FuzzParseSigningKeys: cross-signing uploads are accepted or refused with
// a Matrix error, never a panic.
func FuzzParseSigningKeys(f *testing.F) {
	const master = `{"user_id":"@alice:test","usage":["master"],"keys":{"ed25519:11qvCKD+wQ5bIe+mEAVSfFXSq7GTt4gd8DFNkDzVclw":"11qvCKD+wQ5bIe+mEAVSfFXSq7GTt4gd8DFNkDzVclw"}}`
	for _, s := range [][3]string{
		{master, ``, ``},
		{master, `{"user_id":"@alice:test","usage":["self_signing"],"keys":{"ed25519:k":"k"},"signatures":{"@alice:test":{"ed25519:11qvCKD+wQ5bIe+mEAVSfFXSq7GTt4gd8DFNkDzVclw":"sig"}}}`, `null`},
		{`{"usage":"master"}`, `[]`, `"x"`}, {``, ``, ``}, {`{"keys":{"ed25519:\u0000":"\u0000"}}`, `7`, `{}`},
	} {
		f.Add([]byte(s[0]), []byte(s[1]), []byte(s[2]))
	}
	f.Fuzz(func(t *testing.T, m, s, u []byte) {
		out, err := parseSigningKeys(SigningKeys{Master: m, SelfSigning: s, UserSigning: u}, "@alice:test", nil)
		wantMatrixErr(t, "parseSigningKeys", err)
		for typ, k := range out {
			wantStorable(t, "parseSigningKeys "+typ, k.stored)
		}
	})
}
