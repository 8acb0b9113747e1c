package metrics

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Figures counted in the database and checks run by the server's
// housekeeping (server/housekeeping.go): they are set about once a minute
// (readiness every 15 seconds), so a scrape never runs a query.
var (
	usersRegistered  = gauge("haven_users_registered", "Local accounts, deactivated ones included.")
	usersActive      = gauge("haven_users_active", "Local accounts not deactivated (guests included).")
	usersDeactivated = gauge("haven_users_deactivated", "Deactivated local accounts.")
	usersGuests      = gauge("haven_users_guests", "Guest accounts not deactivated.")
	usersDaily       = gauge("haven_users_daily_active", "Local accounts with a device seen in the last 24 hours.")
	usersMonthly     = gauge("haven_users_monthly_active", "Local accounts with a device seen in the last 30 days.")
	roomsTotal       = gauge("haven_rooms", "Rooms this server knows.")
	roomsLocal       = gauge("haven_rooms_with_local_members", "Rooms with at least one joined local member.")
	usageUpdated     = gauge("haven_usage_updated_timestamp_seconds", "When the user and room figures were last counted (Unix time).")

	readyChecks = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "haven_ready_check", Help: "1 while a readiness check (database, nats, disk) passes, 0 while it fails; checked every 15 seconds.",
	}, []string{"check"})
	ready = gauge("haven_ready", "1 while every readiness check passes (what /health/ready answers), 0 otherwise.")

	dbErrors = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "haven_db_errors_total",
		Help: "Statements, begins and commits the database failed (unique conflicts and cancelled requests apart).",
	}, dbErrorCount.value)

	backupLast = &optionalGauge{desc: prometheus.NewDesc("haven_backup_last_success_timestamp_seconds",
		"When the newest backup in backup.dir was taken (Unix time); 0 while the folder holds none; absent without backup.dir.", nil, nil)}

	certExpiry = &optionalGauge{desc: prometheus.NewDesc("haven_federation_certificate_expiry_timestamp_seconds",
		"When the federation TLS certificate expires (Unix time); absent without federation.", nil, nil)}
)

var dbErrorCount source

func gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
}

func init() {
	Registry.MustRegister(usersRegistered, usersActive, usersDeactivated, usersGuests, usersDaily, usersMonthly,
		roomsTotal, roomsLocal, usageUpdated, readyChecks, ready, dbErrors, certExpiry, backupLast)
}

// Users are the figures of local accounts.
type Users struct {
	Registered, Active, Deactivated, Guests, DailyActive, MonthlyActive int64
}

// Rooms are the figures of rooms.
type Rooms struct{ Total, WithLocalMembers int64 }

// SetUsage publishes freshly counted figures.
func SetUsage(u Users, r Rooms, at time.Time) {
	usersRegistered.Set(float64(u.Registered))
	usersActive.Set(float64(u.Active))
	usersDeactivated.Set(float64(u.Deactivated))
	usersGuests.Set(float64(u.Guests))
	usersDaily.Set(float64(u.DailyActive))
	usersMonthly.Set(float64(u.MonthlyActive))
	roomsTotal.Set(float64(r.Total))
	roomsLocal.Set(float64(r.WithLocalMembers))
	usageUpdated.Set(float64(at.Unix()))
}

// SetReady publishes the result of the readiness checks, by name.
func SetReady(checks map[string]bool) {
	all := 1.0
	for name, ok := range checks {
		v := 0.0
		if ok {
			v = 1
		} else {
			all = 0
		}
		readyChecks.WithLabelValues(name).Set(v)
	}
	ready.Set(all)
}

// SetCertificateExpiry publishes when the federation certificate expires.
func SetCertificateExpiry(notAfter time.Time) { certExpiry.set(float64(notAfter.Unix())) }

// SetBackupTime publishes when the newest backup was taken (the zero time:
// there is none).
func SetBackupTime(t time.Time) {
	if t.IsZero() {
		backupLast.set(0)
		return
	}
	backupLast.set(float64(t.Unix()))
}

// RegisterDBErrors sets where the count of database failures is read from.
func RegisterDBErrors(f func() int64) { dbErrorCount.set(func() float64 { return float64(f()) }) }

// optionalGauge is a gauge exported only once it has been set.
type optionalGauge struct {
	desc  *prometheus.Desc
	bits  atomic.Uint64 // math.Float64bits of the value
	isSet atomic.Bool
}

func (g *optionalGauge) set(v float64) {
	g.bits.Store(math.Float64bits(v))
	g.isSet.Store(true)
}

func (g *optionalGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *optionalGauge) Collect(ch chan<- prometheus.Metric) {
	if g.isSet.Load() {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, math.Float64frombits(g.bits.Load()))
	}
}
