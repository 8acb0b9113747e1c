package keys

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// benchDevices gives a room's worth of devices (one user each) one-time keys.
func benchDevices(b *testing.B, db *storage.DB, s *Service, n, keysEach int) map[string]map[string]string {
	b.Helper()
	ctx := context.Background()
	want := map[string]map[string]string{}
	for i := 0; i < n; i++ {
		u, d := fmt.Sprintf("@u%d:x", i), "D"
		if err := db.Write(ctx, func(tx *storage.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO devices (user_id, device_id, token_hash, created_ts, last_seen_ts) VALUES ($1, $2, $3, 0, 0)`, u, d, u)
			return err
		}); err != nil {
			b.Fatal(err)
		}
		otk := map[string]json.RawMessage{}
		for k := 0; k < keysEach; k++ {
			otk[fmt.Sprintf("signed_curve25519:%d", k)] = json.RawMessage(fmt.Sprintf(`{"key":"k%d"}`, k))
		}
		if _, err := s.Upload(ctx, u, d, UploadRequest{OneTimeKeys: otk, FallbackKeys: map[string]json.RawMessage{"signed_curve25519:f": json.RawMessage(`{"key":"f"}`)}}); err != nil {
			b.Fatal(err)
		}
		want[u] = map[string]string{d: "signed_curve25519"}
	}
	return want
}

// BenchmarkClaim100 is one /keys/claim for 100 devices (a new Olm session
// with every device of a room of 100).
func BenchmarkClaim100(b *testing.B) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		b.Run(d.String(), func(b *testing.B) {
			db := storagetest.Open(b, d)
			s, err := New(context.Background(), db, nil, Options{ServerName: "x"})
			if err != nil {
				b.Fatal(err)
			}
			want := benchDevices(b, db, s, 100, 50)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r, err := s.Claim(context.Background(), want)
				if err != nil || len(r.OneTimeKeys) != 100 {
					b.Fatalf("%v %d", err, len(r.OneTimeKeys))
				}
			}
		})
	}
}

// BenchmarkSendToDevice100 is one /sendToDevice to 100 devices (a room key
// shared with a room of 100).
func BenchmarkSendToDevice100(b *testing.B) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		b.Run(d.String(), func(b *testing.B) {
			db := storagetest.Open(b, d)
			s, err := New(context.Background(), db, nil, Options{ServerName: "x"})
			if err != nil {
				b.Fatal(err)
			}
			want := benchDevices(b, db, s, 100, 0)
			msgs := map[string]map[string]json.RawMessage{}
			for u := range want {
				msgs[u] = map[string]json.RawMessage{"D": json.RawMessage(`{"algorithm":"m.olm.v1.curve25519-aes-sha2","ciphertext":{"k":{"type":0,"body":"` + fmt.Sprintf("%0400d", 0) + `"}}}`)}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := s.SendToDevice(context.Background(), "@u0:x", "D", "m.room.encrypted", fmt.Sprint("t", i), msgs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
