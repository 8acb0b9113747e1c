// Package bus connects Haven to NATS: an embedded JetStream server stored
// under data_dir with no TCP listener (the default), or an external NATS
// server or cluster. The bus only tells: it carries "position N committed"
// and durable work items, never the only copy of anything.
//
// Goroutines: the embedded server's own, and one delivery goroutine per
// subscription (NATS's).
package bus

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Bus is a connection to NATS with the subject namespace of one Haven deployment.
type Bus struct {
	nc     *nats.Conn
	srv    *server.Server
	prefix string
	// Where says what the bus is, for messages.
	Where string
}

// Options choose the bus.
type Options struct {
	// URL of an external NATS; empty starts the embedded one.
	URL string
	// StoreDir holds the embedded JetStream's files.
	StoreDir string
	// Namespace separates deployments that share a NATS cluster (the server name).
	Namespace string
}

// Start connects to the configured NATS, starting the embedded one if needed.
func Start(ctx context.Context, o Options) (*Bus, error) {
	prefix := "haven." + sanitize(o.Namespace) + "."
	if o.URL != "" {
		nc, err := nats.Connect(o.URL, nats.Name("haven"), nats.MaxReconnects(-1), nats.Timeout(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("connect to NATS at %s: %w", o.URL, err)
		}
		return &Bus{nc: nc, prefix: prefix, Where: o.URL}, nil
	}
	opts := &server.Options{
		ServerName:         "haven-embedded",
		DontListen:         true,
		JetStream:          true,
		StoreDir:           filepath.Join(o.StoreDir),
		NoSigs:             true,
		NoLog:              true,
		MaxPayload:         4 << 20,
		JetStreamMaxMemory: 64 << 20,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not start within 30s (store %s)", o.StoreDir)
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Name("haven"))
	if err != nil {
		srv.Shutdown()
		return nil, fmt.Errorf("connect to embedded NATS: %w", err)
	}
	return &Bus{nc: nc, srv: srv, prefix: prefix, Where: "embedded (" + o.StoreDir + ")"}, nil
}

func sanitize(s string) string {
	r := strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_", ":", "_")
	if s == "" {
		return "default"
	}
	return r.Replace(s)
}

// Subject returns the full subject of a topic in this deployment's namespace.
func (b *Bus) Subject(topic string) string { return b.prefix + topic }

// Publish sends data on a topic. It does not wait for delivery.
func (b *Bus) Publish(topic string, data []byte) error {
	return b.nc.Publish(b.prefix+topic, data)
}

// Subscribe calls fn, on one goroutine and in order, for every message on a topic.
func (b *Bus) Subscribe(topic string, fn func(data []byte)) (func(), error) {
	sub, err := b.nc.Subscribe(b.prefix+topic, func(m *nats.Msg) { fn(m.Data) })
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", topic, err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	return func() { _ = sub.Unsubscribe() }, nil
}

// Flush waits until the server has processed everything published so far.
func (b *Bus) Flush(ctx context.Context) error { return b.nc.FlushWithContext(ctx) }

// Conn exposes the NATS connection for JetStream users (durable work queues).
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Close drains the connection and stops the embedded server.
func (b *Bus) Close() {
	_ = b.nc.Drain()
	deadline := time.Now().Add(2 * time.Second)
	for b.nc.IsDraining() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	b.nc.Close()
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

// Ping checks that a NATS URL answers, for the config checker.
func Ping(url string, timeout time.Duration) error {
	nc, err := nats.Connect(url, nats.Timeout(timeout), nats.MaxReconnects(0), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	return nc.FlushTimeout(timeout)
}
