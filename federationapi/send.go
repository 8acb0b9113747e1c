package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/federationapi/origin"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/roomserver"
)

// Bounds of one inbound transaction (the spec's).
const (
	maxTxnPDUs  = 50
	maxTxnEDUs  = 100
	maxTxnBytes = 8 << 20
	// pduRoomsAtOnce is how many rooms' PDUs of one transaction are put
	// in at the same time.
	pduRoomsAtOnce = 8
)

type txnBody struct {
	Origin string            `json:"origin"`
	PDUs   []json.RawMessage `json:"pdus"`
	EDUs   []struct {
		Type    string          `json:"edu_type"`
		Content json.RawMessage `json:"content"`
	} `json:"edus"`
}

type pduResult struct {
	Error string `json:"error,omitempty"`
}

// send takes a transaction: each PDU goes through the roomserver's input
// checks on its own (a failed one is reported in the answer, never fails
// the others), then the EDUs go to their owners. A transaction ID seen
// from the same origin before answers as it did, and one being processed
// is processed once (txnonce.go).
func (a *API) send(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	from := origin.From(ctx)
	txnID, err := pathParam(r, "txnId")
	if err != nil {
		return err
	}
	key := from + "\x00" + txnID
	// A transaction seen before answers as it did; one being processed
	// (the sender retried while we worked) waits for that answer.
	prev, done, err := a.flights.begin(ctx, a.txns, key)
	if err != nil {
		return err
	}
	if prev != nil {
		return httpx.RawJSON(w, http.StatusOK, prev)
	}
	var answer []byte
	defer func() { done(answer) }()
	var body txnBody
	if err := httpx.DecodeJSON(r, &body, maxTxnBytes); err != nil {
		return err
	}
	if len(body.PDUs) > maxTxnPDUs || len(body.EDUs) > maxTxnEDUs {
		return merr.BadJSON("A transaction carries at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs)
	}
	results := a.inputPDUs(ctx, from, body.PDUs)
	for _, edu := range body.EDUs {
		if err := a.inputEDU(ctx, from, edu.Type, edu.Content); err != nil {
			return err // not kept: the origin sends the transaction again
		}
	}
	out, err := json.Marshal(map[string]any{"pdus": results})
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		// The sender gave up: its retry must be processed, not answered
		// from what an interrupted attempt made of it.
		return ctx.Err()
	}
	answer = out
	return httpx.RawJSON(w, http.StatusOK, out)
}

// inputPDUs checks and stores a transaction's PDUs: in order within each
// room, several rooms at once (pduRoomsAtOnce), so that the events of
// different rooms share the database's group commits instead of waiting
// for one commit each — a destination that fell behind sends full
// transactions, and one commit per PDU in turn kept it behind.
func (a *API) inputPDUs(ctx context.Context, from string, pdus []json.RawMessage) map[string]pduResult {
	byRoom := map[string][]json.RawMessage{}
	var rooms []string
	for _, raw := range pdus {
		var head struct {
			RoomID string `json:"room_id"`
		}
		_ = json.Unmarshal(raw, &head) // an unreadable PDU is refused by inputPDU
		if _, ok := byRoom[head.RoomID]; !ok {
			rooms = append(rooms, head.RoomID)
		}
		byRoom[head.RoomID] = append(byRoom[head.RoomID], raw)
	}
	results := make(map[string]pduResult, len(pdus))
	var mu sync.Mutex
	put := func(list []json.RawMessage) {
		for _, raw := range list {
			id, res := a.inputPDU(ctx, from, raw)
			if id != "" {
				mu.Lock()
				results[id] = res
				mu.Unlock()
			}
		}
	}
	if len(rooms) == 1 {
		put(pdus)
		return results
	}
	sem := make(chan struct{}, pduRoomsAtOnce)
	var wg sync.WaitGroup
	for _, room := range rooms {
		sem <- struct{}{}
		wg.Add(1)
		go func(list []json.RawMessage) {
			defer wg.Done()
			defer func() { <-sem }()
			defer func() {
				if p := recover(); p != nil {
					a.Log.WithField("origin", from).Errorf("panic putting in a transaction's PDUs: %v", p)
				}
			}()
			put(list)
		}(byRoom[room])
	}
	wg.Wait()
	return results
}

// inputPDU checks and stores one PDU of a transaction. Its result is
// keyed by its event ID, which from room version 3 on is not in the PDU:
// the PDU is parsed (its room's version known) before any check whose
// refusal the answer reports. A PDU of an unknown room without an
// event_id has no ID to report under and is dropped.
func (a *API) inputPDU(ctx context.Context, from string, raw json.RawMessage) (string, pduResult) {
	var head struct {
		RoomID  string `json:"room_id"`
		EventID string `json:"event_id"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.RoomID == "" {
		return "", pduResult{}
	}
	ver, err := a.Rooms.RoomVersion(ctx, head.RoomID)
	if err != nil {
		return head.EventID, pduResult{Error: errText(err)}
	}
	pdu, err := a.parseUnverified(raw, ver)
	if err != nil {
		return head.EventID, pduResult{Error: errText(err)}
	}
	if err := a.Rooms.CheckServerACL(ctx, head.RoomID, from); err != nil {
		return pdu.EventID(), pduResult{Error: errText(err)}
	}
	if err := a.verifyPDU(ctx, pdu); err != nil {
		return pdu.EventID(), pduResult{Error: errText(err)}
	}
	if _, err := a.Rooms.InputEventFrom(ctx, from, pdu); err != nil {
		var sf *roomserver.SoftFailed
		if errors.As(err, &sf) {
			// Kept, never shown: the sending server need not resend it.
			return pdu.EventID(), pduResult{}
		}
		if _, ok := merr.As(err); !ok {
			a.Log.WithFields(logrus.Fields{"event_id": pdu.EventID(), "room_id": head.RoomID, "origin": from}).WithError(err).Warn("Inbound event not stored")
		}
		return pdu.EventID(), pduResult{Error: errText(err)}
	}
	return pdu.EventID(), pduResult{}
}

func errText(err error) string {
	if me, ok := merr.As(err); ok {
		return me.Msg
	}
	return err.Error()
}

// inputEDU hands an EDU to its owner (ephemeral.go, devicelists.go,
// todevice.go): typing, receipts, presence, device lists and to-device
// messages of the origin's users. Others are for a later part of the
// federation work, or unknown, and are dropped, as the spec allows. An
// error (retry) fails the transaction: an EDU that must not be lost could
// not be stored.
func (a *API) inputEDU(ctx context.Context, from, typ string, content json.RawMessage) (retry error) {
	switch typ {
	case "m.direct_to_device":
		return a.toDeviceEDU(ctx, from, content)
	case "m.device_list_update", "m.signing_key_update":
		a.deviceListEDU(ctx, from, typ, content)
	case "m.typing":
		a.inputTyping(ctx, from, content)
	case "m.receipt":
		a.inputReceipts(ctx, from, content)
	case "m.presence":
		a.inputPresence(ctx, from, content)
	}
	return nil
}
