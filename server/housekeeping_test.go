package server

import (
	"context"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// TestAuditPruner: entries older than audit.retention_days go, newer
// ones stay.
func TestAuditPruner(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		now := time.Now()
		for _, age := range []time.Duration{400 * 24 * time.Hour, 366 * 24 * time.Hour, 364 * 24 * time.Hour, time.Hour} {
			if _, err := db.Exec(ctx, `INSERT INTO audit_log (ts, action, ok) VALUES ($1, 'login', TRUE)`, now.Add(-age).UnixMilli()); err != nil {
				t.Fatal(err)
			}
		}
		l := audit.New(db)
		auditPruner{log: l, days: 365, logger: logrus.New()}.prune(ctx, now)
		recs, err := l.Query(ctx, audit.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 {
			t.Fatalf("%d entries left, want the 2 younger than 365 days", len(recs))
		}
		for _, r := range recs {
			if now.Sub(time.UnixMilli(r.TS)) > 365*24*time.Hour {
				t.Errorf("entry of %v kept", time.UnixMilli(r.TS))
			}
		}
		// No log: nothing to do, no panic.
		auditPruner{days: 365, logger: logrus.New()}.prune(ctx, now)
	})
}

func TestCertificateExpiry(t *testing.T) {
	if _, err := certificateExpiry("/nonexistent/cert.pem"); err == nil {
		t.Error("a missing file gave no error")
	}
}
