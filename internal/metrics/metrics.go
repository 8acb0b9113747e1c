// Package metrics holds Haven's Prometheus metrics and serves them in the
// Prometheus text format on their own listener (off the public port).
//
// A scrape never runs a query: figures read at scrape time come from
// memory or a statfs (Register*), and those counted in the database
// (users, rooms, active users, readiness; usage.go) are set by the
// server's housekeeping about once a minute. docs/monitoring holds the
// dashboard and alert rules that read these metrics;
// sytest/monitoring_test.go checks that each one they name is exported.
package metrics

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/haven-chat/haven/internal/httpx"
)

// Registry holds every Haven metric.
var Registry = prometheus.NewRegistry()

var (
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "haven_http_requests_total", Help: "HTTP requests by route, method and status code.",
	}, []string{"route", "method", "code"})
	latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "haven_http_request_duration_seconds",
		Help:    "HTTP request latency by route (long-polling /sync included).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"route", "method"})
	// SyncWaiters is the number of /sync requests waiting for something to happen.
	SyncWaiters = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "haven_sync_waiters", Help: "Long-polling /sync requests currently waiting.",
	})
	// EventsPersisted counts room events committed by this process.
	EventsPersisted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "haven_events_persisted_total", Help: "Room events committed to the database.",
	})
	// CacheLookups counts cache hits and misses per cache.
	CacheLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "haven_cache_lookups_total", Help: "Cache lookups by cache and result (hit or miss).",
	}, []string{"cache", "result"})
	dbQueries = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "haven_db_queries_total", Help: "SQL statements run (an idle /sync runs none).",
	}, queryCount.value)
	idleConns = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "haven_http_connections_waiting",
		Help: "Client connections waiting for their next request outside the HTTP server (no goroutine, no buffers).",
	}, waitingConns.value)
	diskFreeBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "haven_disk_free_bytes", Help: "Free space on the data folder's disk.",
	}, diskFree.value)
	diskTotalBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "haven_disk_total_bytes", Help: "Size of the data folder's disk.",
	}, diskTotal.value)
	buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "haven_build_info", Help: "1, labelled with the running Haven's version.",
	}, []string{"version"})
	panics = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "haven_handler_panics_total", Help: "Recovered handler panics; each one is a bug.",
	}, func() float64 { return float64(httpx.PanicsTotal.Load()) })
)

func init() {
	Registry.MustRegister(requests, latency, SyncWaiters, EventsPersisted, CacheLookups, panics, pools, dbQueries, idleConns,
		diskFreeBytes, diskTotalBytes, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// Hit and Miss count cache lookups.
func Hit(cache string)  { CacheLookups.WithLabelValues(cache, "hit").Inc() }
func Miss(cache string) { CacheLookups.WithLabelValues(cache, "miss").Inc() }

// Observe records one finished request; it is the httpx.Observer of the client API.
func Observe(r *http.Request, ri *httpx.RequestInfo, status int, d time.Duration) {
	route := "unmatched"
	if ri != nil && ri.Route != "" {
		route = ri.Route
	} else if rc := chi.RouteContext(r.Context()); rc != nil {
		if p := rc.RoutePattern(); p != "" {
			route = p
		}
	}
	requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
	latency.WithLabelValues(route, r.Method).Observe(d.Seconds())
}

// Handler serves /metrics.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{})
}

// PoolStat is one connection pool's figures.
type PoolStat struct {
	Name              string
	Open, InUse, Idle int
	WaitCount         int64
	WaitDuration      time.Duration
}

// source is a figure read at scrape time from a function that another
// package registers once it runs; it reads 0 before.
type source struct {
	f atomic.Pointer[func() float64]
}

func (s *source) set(f func() float64) { s.f.Store(&f) }

func (s *source) value() float64 {
	if f := s.f.Load(); f != nil {
		return (*f)()
	}
	return 0
}

var queryCount, waitingConns, diskFree, diskTotal source

// RegisterDisk sets where the data folder's disk space is read from at
// scrape time (no query: a statfs).
func RegisterDisk(free, total func() float64) {
	diskFree.set(free)
	diskTotal.set(total)
}

// RegisterBuild publishes the running version as haven_build_info.
func RegisterBuild(version string) {
	buildInfo.Reset()
	buildInfo.WithLabelValues(version).Set(1)
}

// RegisterQueryCount sets where the count of SQL statements is read from.
func RegisterQueryCount(f func() int64) { queryCount.set(func() float64 { return float64(f()) }) }

// RegisterWaitingConns sets where the count of connections waiting for
// their next request is read from.
func RegisterWaitingConns(f func() int) { waitingConns.set(func() float64 { return float64(f()) }) }

// RegisterPools sets where database pool figures are read from at scrape time.
func RegisterPools(stats func() []PoolStat) { pools.stats.Store(stats) }

func poolDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, []string{"pool"}, nil)
}

var pools = &poolCollector{
	open:    poolDesc("haven_db_connections_open", "Open database connections."),
	inUse:   poolDesc("haven_db_connections_in_use", "Database connections in use."),
	idle:    poolDesc("haven_db_connections_idle", "Idle database connections."),
	waits:   poolDesc("haven_db_wait_total", "Times a query waited for a free connection."),
	waitSec: poolDesc("haven_db_wait_seconds_total", "Time spent waiting for a free connection."),
}

type poolCollector struct {
	stats                             atomic.Value // func() []PoolStat
	open, inUse, idle, waits, waitSec *prometheus.Desc
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.open
	ch <- c.inUse
	ch <- c.idle
	ch <- c.waits
	ch <- c.waitSec
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	stats, _ := c.stats.Load().(func() []PoolStat)
	if stats == nil {
		return
	}
	for _, s := range stats() {
		ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(s.Open), s.Name)
		ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(s.InUse), s.Name)
		ch <- prometheus.MustNewConstMetric(c.idle, prometheus.GaugeValue, float64(s.Idle), s.Name)
		ch <- prometheus.MustNewConstMetric(c.waits, prometheus.CounterValue, float64(s.WaitCount), s.Name)
		ch <- prometheus.MustNewConstMetric(c.waitSec, prometheus.CounterValue, s.WaitDuration.Seconds(), s.Name)
	}
}
