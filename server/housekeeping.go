package server

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/adminapi/backup"
	"github.com/haven-chat/haven/internal/metrics"
	"github.com/haven-chat/haven/storage"
)

// How often the housekeeping loop does each of its jobs.
const (
	readinessEvery  = 15 * time.Second
	usageEvery      = time.Minute
	auditPruneEvery = 24 * time.Hour
)

// housekeeping runs until ctx ends: it publishes the readiness checks
// (every 15 seconds), the user and room figures and the certificate's
// expiry (every minute) as metrics, and prunes the audit log (at start,
// then once a day). One goroutine; each job is cheap or rare.
func (a *App) housekeeping(ctx context.Context) {
	metrics.RegisterDBErrors(storage.Errors.Load)
	var log auditPruneLog
	if a.Audit != nil {
		log = a.Audit
	}
	pruner := auditPruner{log: log, days: a.Cfg.Audit.RetentionDays, logger: a.Log}
	var lastUsage, lastPrune time.Time
	t := time.NewTicker(readinessEvery)
	defer t.Stop()
	for {
		now := time.Now()
		a.publishReadiness(ctx)
		if now.Sub(lastUsage) >= usageEvery {
			lastUsage = now
			a.publishUsage(ctx, now)
		}
		if now.Sub(lastPrune) >= auditPruneEvery {
			lastPrune = now
			pruner.prune(ctx, now)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *App) publishReadiness(ctx context.Context) {
	checks := map[string]bool{}
	for _, c := range (readiness{a}).Ready(ctx) {
		checks[c.Name] = c.OK
	}
	metrics.SetReady(checks)
}

// publishUsage counts users and rooms (four small queries a minute).
func (a *App) publishUsage(ctx context.Context, now time.Time) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var u metrics.Users
	var r metrics.Rooms
	uc, err := a.Users.CountUsers(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down
		}
		a.Log.WithError(err).Warn("Counting users for the metrics failed")
		return
	}
	u = metrics.Users{Registered: uc.Total, Active: uc.Active, Deactivated: uc.Deactivated, Guests: uc.Guests,
		DailyActive: uc.Daily, MonthlyActive: uc.Monthly}
	if a.Rooms != nil {
		rc, err := a.Rooms.CountRooms(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.Log.WithError(err).Warn("Counting rooms for the metrics failed")
			return
		}
		r = metrics.Rooms{Total: rc.Total, WithLocalMembers: rc.Local}
	}
	metrics.SetUsage(u, r, now)
	a.publishBackupAge()
	if f := a.Cfg.Federation; f.Enabled && f.TLSCert != "" {
		if notAfter, err := certificateExpiry(f.TLSCert); err != nil {
			a.Log.WithError(err).Warn("Reading the federation certificate for the metrics failed")
		} else {
			metrics.SetCertificateExpiry(notAfter)
		}
	}
}

// certificateExpiry reads when the first certificate of a PEM file expires.
func certificateExpiry(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return time.Time{}, fmt.Errorf("%s holds no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", path, err)
	}
	return cert.NotAfter, nil
}

// auditPruneLog is the audit log as the pruner uses it (*audit.Log).
type auditPruneLog interface {
	Prune(ctx context.Context, before time.Time) (int64, error)
}

// auditPruner deletes the audit entries older than the retention period
// (audit.retention_days).
type auditPruner struct {
	log    auditPruneLog
	days   int
	logger logrus.FieldLogger
}

func (p auditPruner) prune(ctx context.Context, now time.Time) {
	if p.log == nil || p.days <= 0 {
		return
	}
	before := now.Add(-time.Duration(p.days) * 24 * time.Hour)
	n, err := p.log.Prune(ctx, before)
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down
		}
		p.logger.WithError(err).Error("Pruning the audit log failed")
		return
	}
	if n > 0 {
		p.logger.WithFields(logrus.Fields{"deleted": n, "before": before.UTC().Format(time.RFC3339)}).Info("Audit log pruned")
	}
}

// publishBackupAge reads when the newest backup in backup.dir was taken
// (its manifest), for the backup-age alert; without backup.dir nothing is
// published (as `haven health` then does not check it either).
func (a *App) publishBackupAge() {
	if a.Cfg.Backup.Dir == "" {
		return
	}
	m, err := backup.Newest(a.Cfg.Backup.Dir)
	switch {
	case err == nil:
		metrics.SetBackupTime(m.Created)
	case errors.Is(err, backup.ErrNoBackup) || errors.Is(err, fs.ErrNotExist):
		metrics.SetBackupTime(time.Time{})
	default:
		a.Log.WithError(err).Warn("Reading the newest backup for the metrics failed")
	}
}
