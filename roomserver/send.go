package roomserver

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
)

// Sender identifies who sends an event and from which device.
type Sender struct {
	UserID   string
	DeviceID string
}

// SendRequest is a message or state event from a client.
type SendRequest struct {
	RoomID   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	// TxnID makes the send idempotent per device; empty for state events.
	TxnID string
}

// Send stores a client's event and returns its ID. With a TxnID, the same
// device sending the same TxnID again gets the first event's ID back and no
// second event is stored, also across restarts.
func (s *Service) Send(ctx context.Context, from Sender, req SendRequest) (string, error) {
	if req.Type == "" {
		return "", merr.BadJSON("Event type must not be empty")
	}
	if len(req.Content) == 0 || req.Content[0] != '{' {
		return "", merr.BadJSON("Event content must be a JSON object")
	}
	if req.StateKey != nil && req.Type == spec.MRoomMember {
		return s.memberState(ctx, from.UserID, req.RoomID, *req.StateKey, req.Content)
	}
	if req.StateKey != nil {
		if err := s.checkStateContent(ctx, req); err != nil {
			return "", err
		}
	}
	var eventID string
	err := s.withRoom(ctx, req.RoomID, func(r *room) error {
		if req.StateKey != nil {
			// An identical state event changes nothing: answer with the current one.
			if cur := r.state[stateKey{req.Type, *req.StateKey}]; cur != nil && cur.SenderID() == spec.SenderID(from.UserID) && jsonEqual(cur.Content(), req.Content) {
				eventID = cur.EventID()
				return nil
			}
		}
		d := newDraft(r)
		proto := &gomatrixserverlib.ProtoEvent{SenderID: from.UserID, Type: req.Type, StateKey: req.StateKey, Content: spec.RawJSON(req.Content)}
		if req.Type == spec.MRoomRedaction && req.StateKey == nil {
			var c struct {
				Redacts string `json:"redacts"`
			}
			_ = json.Unmarshal(req.Content, &c)
			if c.Redacts == "" {
				return merr.BadJSON("A redaction needs content.redacts; use the /redact endpoint")
			}
			if err := s.checkRedaction(ctx, r, from.UserID, c.Redacts); err != nil {
				return err
			}
			if !versionDropsCreator(r.version) {
				proto.Redacts = c.Redacts
			}
		}
		if _, err := s.add(d, proto, eventMeta{deviceID: from.DeviceID, txnID: req.TxnID}); err != nil {
			return err
		}
		evs, err := s.commit(ctx, d, nil, nil)
		if err != nil {
			return err
		}
		eventID = evs[0].EventID
		return nil
	})
	if err == nil && req.Type == spec.MRoomGuestAccess && req.StateKey != nil && *req.StateKey == "" {
		if err := s.dropGuests(ctx, req.RoomID); err != nil {
			logging.From(ctx).WithError(err).WithField("room_id", req.RoomID).Error("make guests leave a room that no longer allows them")
		}
	}
	var taken *txnTaken
	if errors.As(err, &taken) {
		// The device sent this transaction before: answer with its event.
		return taken.eventID, nil
	}
	if errors.Is(err, errTxnExists) {
		// Another process stored the transaction meanwhile: answer with its event.
		return selectTxn(ctx, s.db, from.UserID, from.DeviceID, req.RoomID, req.TxnID)
	}
	return eventID, err
}

// errTxnExists aborts a commit whose transaction ID was used already.
var errTxnExists = errors.New("transaction ID already used")

// txnTaken aborts a commit, before it takes a position, whose transaction
// ID the sender's device used before for eventID.
type txnTaken struct{ eventID string }

func (t *txnTaken) Error() string { return "transaction ID used before for " + t.eventID }

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// Redact redacts an event. reason may be empty.
func (s *Service) Redact(ctx context.Context, from Sender, roomID, targetID, reason, txnID string) (string, error) {
	content := map[string]any{"redacts": targetID}
	if reason != "" {
		content["reason"] = reason
	}
	return s.Send(ctx, from, SendRequest{RoomID: roomID, Type: spec.MRoomRedaction, Content: json.RawMessage(mustJSON(content)), TxnID: txnID})
}

// checkRedaction: the target must be in this room and the sender must be
// allowed to redact it.
func (s *Service) checkRedaction(ctx context.Context, r *room, sender, targetID string) error {
	evs, err := EventsByID(ctx, s.db, []string{targetID})
	if err != nil {
		return err
	}
	if len(evs) == 0 || evs[0].RoomID != r.id {
		return merr.NotFound("Event %s not found in this room", targetID)
	}
	if !canRedact(r, sender, &evs[0]) {
		return merr.Forbidden("You may not redact other users' events in this room")
	}
	return nil
}

// checkStateContent validates state events whose content the server must check.
func (s *Service) checkStateContent(ctx context.Context, req SendRequest) error {
	switch req.Type {
	case spec.MRoomCanonicalAlias:
		return s.checkCanonicalAlias(ctx, req.RoomID, req.Content)
	}
	return nil
}
