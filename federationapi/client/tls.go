package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/config"
)

// keyPair holds a certificate loaded from files, swapped whole on reload.
type keyPair struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func newKeyPair(certFile, keyFile string) (*keyPair, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("federation.tls_cert and federation.tls_key must both be set")
	}
	kp := &keyPair{certFile: certFile, keyFile: keyFile}
	if err := kp.reload(); err != nil {
		return nil, err
	}
	return kp, nil
}

// reload reads the files again; when they are broken it keeps the
// certificate it has and returns the error.
func (kp *keyPair) reload() error {
	c, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		return fmt.Errorf("load federation certificate %s and key %s: %w", kp.certFile, kp.keyFile, err)
	}
	kp.cur.Store(&c)
	return nil
}

func (kp *keyPair) get() *tls.Certificate { return kp.cur.Load() }

// caPool returns the CAs of federation.ca_file, or nil (the system roots)
// when it is empty.
func caPool(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read federation.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("federation.ca_file %s holds no PEM certificate", caFile)
	}
	return pool, nil
}

// serverState is what a handshake of the listener uses, swapped whole.
type serverState struct {
	cert *tls.Certificate
	cfg  *tls.Config // returned by GetConfigForClient
}

// ServerTLS returns the TLS configuration of the federation listener. Its
// certificate comes from tls_cert and tls_key; with mutual_tls every peer
// must present a certificate issued by ca_file's CAs (the system roots when
// it is empty). reload reads the files again (call it on SIGHUP; see
// OnSIGHUP): new connections use the new certificate and CAs, and when the
// new files are broken the old ones stay in use and reload returns the
// error.
func ServerTLS(cfg config.Federation) (tlsConfig *tls.Config, reload func() error, err error) {
	var state atomic.Pointer[serverState]
	load := func() error {
		c, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("load federation certificate %s and key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		st := &serverState{cert: &c}
		st.cfg = &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"h2", "http/1.1"},
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return st.cert, nil },
		}
		if cfg.MutualTLS {
			pool, err := caPool(cfg.CAFile)
			if err != nil {
				return err
			}
			if pool == nil {
				if pool, err = x509.SystemCertPool(); err != nil {
					return fmt.Errorf("system CA certificates: %w", err)
				}
			}
			st.cfg.ClientAuth = tls.RequireAndVerifyClientCert
			st.cfg.ClientCAs = pool
		}
		state.Store(st)
		return nil
	}
	if cfg.TLSCert == "" || cfg.TLSKey == "" {
		return nil, nil, errors.New("federation.tls_cert and federation.tls_key must both be set")
	}
	if err := load(); err != nil {
		return nil, nil, err
	}
	tlsConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return state.Load().cert, nil
		},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return state.Load().cfg, nil
		},
	}
	if cfg.MutualTLS {
		tlsConfig.ClientAuth = tls.RequireAndVerifyClientCert
		tlsConfig.ClientCAs = state.Load().cfg.ClientCAs
	}
	return tlsConfig, load, nil
}

// OnSIGHUP calls reload on every SIGHUP until ctx ends, and logs whether
// it worked. It returns at once; the waiting happens in a goroutine.
func OnSIGHUP(ctx context.Context, log logrus.FieldLogger, reload func() error) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				if err := reload(); err != nil {
					log.WithError(err).Error("federation: SIGHUP: the new certificate files were not loaded; the previous ones stay in use")
				} else {
					log.Info("federation: SIGHUP: certificate files reloaded")
				}
			}
		}
	}()
}
