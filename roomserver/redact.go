package roomserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/storage"
)

// redactsOf returns the event a redaction redacts (top-level before v11, in
// content from v11).
func redactsOf(p gomatrixserverlib.PDU) string {
	if id := p.Redacts(); id != "" {
		return id
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	_ = json.Unmarshal(p.Content(), &c)
	return c.Redacts
}

// applyRedaction redacts the target of a redaction inside the transaction
// that stores the redaction. A target in another room, or unknown, is left
// alone (the redaction is still stored, as the spec wants).
func (s *Service) applyRedaction(ctx context.Context, tx *storage.Tx, r *room, red gomatrixserverlib.PDU) (*Notice, error) {
	target := redactsOf(red)
	if target == "" {
		return nil, nil
	}
	var roomID, js, redactedBy string
	var pos int64
	err := tx.QueryRow(ctx, `SELECT room_id, json, COALESCE(redacted_by, ''), pos FROM events WHERE event_id = $1`, target).Scan(&roomID, &js, &redactedBy, &pos)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && roomID != r.id) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("select redaction target %s: %w", target, err)
	}
	if redactedBy != "" {
		return nil, nil // already redacted; keep the first redaction
	}
	redacted, err := r.version.RedactEventJSON([]byte(js))
	if err != nil {
		return nil, fmt.Errorf("redact %s: %w", target, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3`, string(redacted), red.EventID(), target); err != nil {
		return nil, fmt.Errorf("store redacted %s: %w", target, err)
	}
	if err := unindexEvent(ctx, tx, pos); err != nil {
		return nil, err
	}
	return &Notice{Redacts: target, RedactedJSON: redacted}, nil
}

// afterRedaction updates the caches once the redaction has committed.
func (s *Service) afterRedaction(r *room, n *Notice) {
	s.pduCache.Remove(n.Redacts)
	for k, p := range r.state {
		if p.EventID() != n.Redacts {
			continue
		}
		rp, err := r.version.NewEventFromTrustedJSONWithEventID(n.Redacts, n.RedactedJSON, true)
		if err != nil {
			s.rooms.Remove(r.id)
			return
		}
		next := make(map[stateKey]gomatrixserverlib.PDU, len(r.state))
		for k2, v := range r.state {
			next[k2] = v
		}
		next[k] = rp
		r.mu.Lock()
		r.state = next
		r.mu.Unlock()
		return
	}
}

// canRedact applies the client-API rule on top of the auth rules: a user may
// redact their own events, or anyone's with the redact power level.
func canRedact(r *room, sender string, target *Event) bool {
	if target.Sender == sender {
		return true
	}
	pl := powerLevels(r)
	return pl.UserLevel(spec.SenderID(sender)) >= pl.Redact
}

// powerLevels returns the room's power levels, or the defaults of a room without them.
func powerLevels(r *room) gomatrixserverlib.PowerLevelContent {
	if p := r.state[stateKey{spec.MRoomPowerLevels, ""}]; p != nil {
		if pl, err := p.PowerLevels(); err == nil {
			return applyCreators(r, *pl)
		}
	}
	var pl gomatrixserverlib.PowerLevelContent
	pl.Defaults()
	if c := r.state[stateKey{spec.MRoomCreate, ""}]; c != nil {
		pl.Users = map[string]int64{string(c.SenderID()): 100}
	}
	return applyCreators(r, pl)
}

// applyCreators gives room creators the highest level in rooms whose version
// makes creators privileged (v12).
func applyCreators(r *room, pl gomatrixserverlib.PowerLevelContent) gomatrixserverlib.PowerLevelContent {
	if !r.version.PrivilegedCreators() {
		return pl
	}
	c := r.state[stateKey{spec.MRoomCreate, ""}]
	if c == nil {
		return pl
	}
	users := make(map[string]int64, len(pl.Users)+1)
	for k, v := range pl.Users {
		users[k] = v
	}
	const top = int64(1) << 53
	users[string(c.SenderID())] = top
	var cc struct {
		Additional []string `json:"additional_creators"`
	}
	_ = json.Unmarshal(c.Content(), &cc)
	for _, u := range cc.Additional {
		users[u] = top
	}
	pl.Users = users
	return pl
}
