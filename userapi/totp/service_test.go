package totp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestService(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		now := time.Unix(1700000000, 0)
		s := New(db, Options{Issuer: "example.com", EncryptionKey: "k", Now: func() time.Time { return now }})
		const u = "@alice:example.com"
		en, err := s.Begin(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		secret, _ := DecodeSecret(en.Secret)
		if st, _ := s.Status(ctx, u); !st.Pending || st.Enrolled {
			t.Fatalf("status after Begin: %+v", st)
		}
		var stored string
		if err := db.QueryRow(ctx, `SELECT secret FROM totp_secrets WHERE user_id = $1`, u).Scan(&stored); err != nil || !strings.HasPrefix(stored, "v1:") || strings.Contains(stored, en.Secret) {
			t.Fatalf("stored secret %q (%v) is not encrypted", stored, err)
		}
		if err := s.Verify(ctx, u, Code(secret, Step(now), 6)); !merr.Is(err, "M_FORBIDDEN") {
			t.Fatalf("Verify before Confirm: %v", err)
		}
		if _, err := s.Confirm(ctx, u, "000000"); !merr.Is(err, "M_FORBIDDEN") {
			t.Fatalf("Confirm with a wrong code: %v", err)
		}
		codes, err := s.Confirm(ctx, u, Code(secret, Step(now), 6))
		if err != nil || len(codes) != RecoveryCodeCount {
			t.Fatalf("Confirm: %v %v", codes, err)
		}
		if _, err := s.Begin(ctx, u); !merr.Is(err, "M_FORBIDDEN") {
			t.Fatalf("Begin when enrolled: %v", err)
		}
		// The code used to confirm cannot sign in; nor can the one before.
		for _, c := range []string{Code(secret, Step(now), 6), Code(secret, Step(now)-1, 6)} {
			if err := s.Verify(ctx, u, c); !merr.Is(err, "M_FORBIDDEN") {
				t.Fatalf("reused code: %v", err)
			}
		}
		now = now.Add(Period)
		c := Code(secret, Step(now), 6)
		if err := s.Verify(ctx, u, c); err != nil {
			t.Fatalf("fresh code: %v", err)
		}
		if err := s.Verify(ctx, u, c); !merr.Is(err, "M_FORBIDDEN") {
			t.Fatalf("same code twice: %v", err)
		}
		// Recovery codes: once each, in any case and with or without the dash.
		if err := s.Verify(ctx, u, strings.ToUpper(strings.ReplaceAll(codes[0], "-", ""))); err != nil {
			t.Fatalf("recovery code: %v", err)
		}
		if err := s.Verify(ctx, u, codes[0]); !merr.Is(err, "M_FORBIDDEN") {
			t.Fatalf("recovery code twice: %v", err)
		}
		if st, _ := s.Status(ctx, u); !st.Enrolled || st.RecoveryCodes != RecoveryCodeCount-1 {
			t.Fatalf("status: %+v", st)
		}
		// Too many wrong codes: even a right one is refused for a while.
		for i := 0; i < MaxFailures; i++ {
			_ = s.Verify(ctx, u, "123456")
		}
		now = now.Add(Period)
		if err := s.Verify(ctx, u, Code(secret, Step(now), 6)); !merr.Is(err, "M_LIMIT_EXCEEDED") {
			t.Fatalf("after %d failures: %v", MaxFailures, err)
		}
		now = now.Add(FailureWindow)
		if err := s.Verify(ctx, u, Code(secret, Step(now), 6)); err != nil {
			t.Fatalf("after the window: %v", err)
		}
		// Without the key the secret does not open.
		if _, _, _, err := New(db, Options{Issuer: "example.com"}).load(ctx, u); err == nil {
			t.Fatal("encrypted secret read without the key")
		}
		// Admin enrolment replaces the secret at once and drops recovery codes.
		en2, err := s.Enroll(ctx, u)
		if err != nil || !strings.HasPrefix(en2.URI, "otpauth://totp/") {
			t.Fatal(en2, err)
		}
		if st, _ := s.Status(ctx, u); !st.Enrolled || st.RecoveryCodes != 0 {
			t.Fatalf("status after Enroll: %+v", st)
		}
		if err := s.Verify(ctx, u, codes[1]); !merr.Is(err, "M_FORBIDDEN") {
			t.Fatalf("old recovery code after Enroll: %v", err)
		}
		if ok, err := s.Reset(ctx, u); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if st, _ := s.Status(ctx, u); st.Enrolled || st.Pending {
			t.Fatalf("status after Reset: %+v", st)
		}
		// Plain storage when no key is configured.
		p := New(db, Options{Issuer: "example.com", Now: func() time.Time { return now }})
		en3, _ := p.Enroll(ctx, "@bob:example.com")
		sec3, _ := DecodeSecret(en3.Secret)
		if err := p.Verify(ctx, "@bob:example.com", Code(sec3, Step(now), 6)); err != nil {
			t.Fatal(err)
		}
	})
}
