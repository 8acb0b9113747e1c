package federationapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/merr"
)

// ToDeviceInbox takes the to-device messages of other servers' users for
// ours (userapi/keys). ReceiveToDevice delivers an EDU once per origin and
// message ID; a Matrix error (merr) means the EDU is unusable, any other
// error that it could not be stored now.
type ToDeviceInbox interface {
	ReceiveToDevice(ctx context.Context, origin, sender, evType, messageID string, messages map[string]map[string]json.RawMessage) error
}

// toDeviceEDU hands an inbound m.direct_to_device EDU to the key service:
// its sender must be a user of the origin. An unusable EDU is dropped (the
// spec's rule for EDUs); one that could not be stored fails the whole
// transaction with 503, so that the origin sends it again (the key
// service's record of delivered message IDs keeps the repeat from being
// delivered twice).
func (a *API) toDeviceEDU(ctx context.Context, from string, content json.RawMessage) error {
	var m struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	log := a.Log.WithFields(logrus.Fields{"origin": from, "edu_type": "m.direct_to_device"})
	if err := json.Unmarshal(content, &m); err != nil {
		log.WithError(err).Debug("Unreadable to-device EDU dropped")
		return nil
	}
	log = log.WithFields(logrus.Fields{"user_id": m.Sender, "message_id": m.MessageID})
	if ids.ServerOf(m.Sender, '@') != from {
		log.Debug("To-device EDU of another server's user dropped")
		return nil
	}
	if a.ToDevice == nil || len(m.Messages) == 0 {
		return nil
	}
	err := a.ToDevice.ReceiveToDevice(ctx, from, m.Sender, m.Type, m.MessageID, m.Messages)
	if err == nil {
		return nil
	}
	if _, ok := merr.As(err); ok {
		log.WithError(err).Debug("To-device EDU dropped")
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// Logged once, with the cause, where errors become answers.
	return merr.Custom(http.StatusServiceUnavailable, "M_UNKNOWN", "The to-device messages of %s could not be stored; send the transaction again", m.Sender).Wrap(err)
}
