package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/haven-chat/haven/internal/merr"
)

// UserDevices is a user's device list as servers exchange it (the answer
// of GET /_matrix/federation/v1/user/devices/{userId}). StreamID is the
// user's position on the device list stream: the stream_id of the last
// m.device_list_update sent for the user.
type UserDevices struct {
	UserID         string          `json:"user_id"`
	StreamID       int64           `json:"stream_id"`
	Devices        []UserDevice    `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// UserDevice is one device of a UserDevices: Keys is absent for a device
// that has uploaded none.
type UserDevice struct {
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// ServerQueryResponse is the answer of POST /_matrix/federation/v1/user/keys/query.
type ServerQueryResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
}

// DeviceListUpdate is the content of an m.device_list_update EDU: one
// device of a user changed (or was deleted) at StreamID, after the updates
// PrevID of the same user.
type DeviceListUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// SigningKeyUpdate is the content of an m.signing_key_update EDU.
type SigningKeyUpdate struct {
	UserID         string          `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// checkLocal refuses user IDs that are malformed (400) or of another
// server (403): servers ask each other only about their own users.
func (s *Service) checkLocal(userID string) error {
	if err := CheckUserID(userID); err != nil {
		return err
	}
	if serverOf(userID) != s.opts.ServerName {
		return merr.Forbidden("%s is not a user of this server", userID)
	}
	return nil
}

// LocalUserDevices answers another server's GET /user/devices for one of
// our users: every device (with its keys and self-signatures, when it has
// uploaded keys), the cross-signing keys other users see, and the user's
// device list position. The position is read first: a change committed
// meanwhile is in the devices and comes again in an update the asking
// server then finds it already has.
func (s *Service) LocalUserDevices(ctx context.Context, userID string) (*UserDevices, error) {
	if err := s.checkLocal(userID); err != nil {
		return nil, err
	}
	out := &UserDevices{UserID: userID, Devices: []UserDevice{}}
	err := s.db.QueryRow(ctx, `SELECT pos FROM device_list_changes WHERE user_id = $1`, userID).Scan(&out.StreamID)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("select device list position of %s: %w", userID, err)
	}
	sigs, err := signaturesOf(ctx, s.db, []string{userID}, userID)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, `SELECT d.device_id, d.display_name, k.key_json FROM devices d
LEFT JOIN device_keys k ON k.user_id = d.user_id AND k.device_id = d.device_id WHERE d.user_id = $1 ORDER BY d.device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("select devices of %s: %w", userID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var d UserDevice
		var name, js sql.NullString
		if err := rows.Scan(&d.DeviceID, &name, &js); err != nil {
			return nil, fmt.Errorf("select devices of %s: %w", userID, err)
		}
		d.DisplayName = name.String
		if js.Valid {
			d.Keys = withSignatures(js.String, sigs[[2]string{userID, d.DeviceID}], nil)
		}
		out.Devices = append(out.Devices, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("select devices of %s: %w", userID, err)
	}
	rows.Close()
	csk, err := crossSigningKeysOf(ctx, s.db, []string{userID})
	if err != nil {
		return nil, err
	}
	if js, ok := csk[userID][KeyMaster]; ok {
		out.MasterKey = withSignatures(js, sigs[[2]string{userID, firstKey(js)}], nil)
	}
	if js, ok := csk[userID][KeySelfSigning]; ok {
		out.SelfSigningKey = json.RawMessage(js)
	}
	return out, nil
}

// LocalQuery answers another server's POST /user/keys/query: the device
// keys and the master and self-signing keys of our users named (all their
// devices, or those listed). A user of another server is refused.
func (s *Service) LocalQuery(ctx context.Context, want map[string][]string) (*ServerQueryResponse, error) {
	for u := range want {
		if err := s.checkLocal(u); err != nil {
			return nil, err
		}
	}
	// Query with no requester: only the users' own signatures, never a
	// user-signing key.
	r, err := s.Query(ctx, "", want)
	if err != nil {
		return nil, err
	}
	return &ServerQueryResponse{DeviceKeys: r.DeviceKeys, MasterKeys: r.MasterKeys, SelfSigningKeys: r.SelfSigningKeys}, nil
}

// OutboundUpdates builds what other servers are told of a device list
// change of one of our users: one m.device_list_update per device of the
// notice (its current keys and name, or deleted), chained by stream IDs
// from the notice's Prev, and an m.signing_key_update when cross-signing
// keys changed. A device changed again since is described as it is now;
// its later update repeats that, harmlessly.
func (s *Service) OutboundUpdates(ctx context.Context, n DeviceListNotice) ([]DeviceListUpdate, *SigningKeyUpdate, error) {
	if serverOf(n.UserID) != s.opts.ServerName {
		return nil, nil, nil
	}
	var updates []DeviceListUpdate
	if len(n.Devices) > 0 {
		cur, err := s.LocalUserDevices(ctx, n.UserID)
		if err != nil {
			return nil, nil, err
		}
		byID := map[string]UserDevice{}
		for _, d := range cur.Devices {
			byID[d.DeviceID] = d
		}
		prev := n.Prev
		first := n.Pos - int64(len(n.Devices)) + 1
		for i, id := range n.Devices {
			u := DeviceListUpdate{UserID: n.UserID, DeviceID: id, StreamID: first + int64(i), PrevID: []int64{}}
			if prev > 0 {
				u.PrevID = []int64{prev}
			}
			if d, ok := byID[id]; ok {
				u.DisplayName, u.Keys = d.DisplayName, d.Keys
			} else {
				u.Deleted = true
			}
			updates = append(updates, u)
			prev = u.StreamID
		}
	}
	var signing *SigningKeyUpdate
	if n.CrossSigning {
		csk, err := crossSigningKeysOf(ctx, s.db, []string{n.UserID})
		if err != nil {
			return nil, nil, err
		}
		sigs, err := signaturesOf(ctx, s.db, []string{n.UserID}, n.UserID)
		if err != nil {
			return nil, nil, err
		}
		signing = &SigningKeyUpdate{UserID: n.UserID}
		if js, ok := csk[n.UserID][KeyMaster]; ok {
			signing.MasterKey = withSignatures(js, sigs[[2]string{n.UserID, firstKey(js)}], nil)
		}
		if js, ok := csk[n.UserID][KeySelfSigning]; ok {
			signing.SelfSigningKey = json.RawMessage(js)
		}
		if signing.MasterKey == nil && signing.SelfSigningKey == nil {
			signing = nil
		}
	}
	return updates, signing, nil
}
