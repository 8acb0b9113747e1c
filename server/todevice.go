package server

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"

	"github.com/haven-chat/haven/federationapi"
	"github.com/haven-chat/haven/federationapi/outbound"
	"github.com/haven-chat/haven/userapi/keys"
)

// keysFederation is the key service's way to other servers' users: the
// outbound queues for to-device EDUs (keys.ToDeviceQueue) and the peers for
// one-time key claims (keys.KeyClaimer). The key service starts before
// the federation's parts (the user API needs it, the queues need the
// roomserver), hence the pointers, set as they start; the client API
// serves no request before all have.
type keysFederation struct {
	queues atomic.Pointer[outbound.Queues]
	peers  atomic.Pointer[federationapi.Peers]
	// allowed is the allowlist: no queue is made for a server outside it.
	allowed func(string) bool
}

var errFederationStarting = errors.New("federation is not started yet")

func (k *keysFederation) QueueToDevice(ctx context.Context, server, messageID string, content json.RawMessage) error {
	if k.allowed != nil && !k.allowed(server) {
		return keys.ErrServerNotAllowed
	}
	q := k.queues.Load()
	if q == nil {
		return errFederationStarting
	}
	return q.QueueToDevice(ctx, server, messageID, content)
}

func (k *keysFederation) ClaimKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	p := k.peers.Load()
	if p == nil {
		return nil, errFederationStarting
	}
	return p.ClaimKeys(ctx, server, want)
}
