package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

var errInvalidFrom = merr.InvalidParam("from is not a token this server gave")

// Limits of pusher fields (the spec's for app_id and pushkey).
const (
	maxAppIDBytes   = 64
	maxPushkeyBytes = 512
	maxFieldBytes   = 1024
	maxDataBytes    = 16 << 10
	// MaxPushersPerUser bounds a user's pushers.
	MaxPushersPerUser = 50
	gatewayPath       = "/_matrix/push/v1/notify"
)

// Pusher is one pusher as GET /pushers shows it.
type Pusher struct {
	Pushkey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`

	userID    string
	deviceID  string
	pushkeyTS int64 // seconds
	url       string
	format    string
}

// pusherIndex holds every pusher in memory, by user.
type pusherIndex struct {
	mu     sync.RWMutex
	byUser map[string][]*Pusher
}

func newPusherIndex() *pusherIndex { return &pusherIndex{byUser: make(map[string][]*Pusher)} }

func (pi *pusherIndex) of(user string) []*Pusher {
	pi.mu.RLock()
	defer pi.mu.RUnlock()
	return pi.byUser[user]
}

func (pi *pusherIndex) find(user, appID, pushkey string) *Pusher {
	for _, p := range pi.of(user) {
		if p.AppID == appID && p.Pushkey == pushkey {
			return p
		}
	}
	return nil
}

// finish parses what delivery needs from the pusher's data.
func (p *Pusher) finish() {
	var d struct {
		URL    string `json:"url"`
		Format string `json:"format"`
	}
	_ = json.Unmarshal(p.Data, &d)
	p.url, p.format = d.URL, d.Format
}

func (s *Service) loadPushers(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `SELECT user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, pushkey_ts, device_id FROM pushers`)
	if err != nil {
		return fmt.Errorf("load pushers: %w", err)
	}
	defer rows.Close()
	byUser := map[string][]*Pusher{}
	for rows.Next() {
		p := &Pusher{}
		var data string
		if err := rows.Scan(&p.userID, &p.AppID, &p.Pushkey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &data, &p.pushkeyTS, &p.deviceID); err != nil {
			return fmt.Errorf("load pushers: %w", err)
		}
		p.Data = json.RawMessage(data)
		p.finish()
		byUser[p.userID] = append(byUser[p.userID], p)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	s.pushers.mu.Lock()
	s.pushers.byUser = byUser
	s.pushers.mu.Unlock()
	return nil
}

// Pushers returns the user's pushers.
func (s *Service) Pushers(ctx context.Context, userID string) []Pusher {
	list := s.pushers.of(userID)
	out := make([]Pusher, 0, len(list))
	for _, p := range list {
		out = append(out, *p)
	}
	return out
}

// SetPusherRequest is the body of POST /pushers/set. Kind JSON null
// deletes the pusher.
type SetPusherRequest struct {
	Pushkey           *string         `json:"pushkey"`
	Kind              json.RawMessage `json:"kind"`
	AppID             *string         `json:"app_id"`
	AppDisplayName    *string         `json:"app_display_name"`
	DeviceDisplayName *string         `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag"`
	Lang              *string         `json:"lang"`
	Data              json.RawMessage `json:"data"`
	Append            bool            `json:"append"`
}

func required(name string, v *string, limit int) error {
	if v == nil || *v == "" {
		return merr.MissingParam("Missing %s", name)
	}
	if len(*v) > limit {
		return merr.InvalidParam("%s is longer than %d bytes", name, limit)
	}
	return nil
}

// validGatewayURL checks data.url of an http pusher.
func validGatewayURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return merr.InvalidParam("data.url must be an http or https URL")
	}
	if u.Path != gatewayPath {
		return merr.InvalidParam("data.url must end with %s", gatewayPath)
	}
	return nil
}

// SetPusher creates, replaces or (kind null) deletes a pusher of the user.
func (s *Service) SetPusher(ctx context.Context, userID, deviceID string, req SetPusherRequest) error {
	if err := required("pushkey", req.Pushkey, maxPushkeyBytes); err != nil {
		return err
	}
	if err := required("app_id", req.AppID, maxAppIDBytes); err != nil {
		return err
	}
	appID, pushkey := *req.AppID, *req.Pushkey
	unlock := s.pusherLocks.Lock(userID)
	defer unlock()
	rawKind := bytes.TrimSpace(req.Kind)
	if len(rawKind) == 0 {
		return merr.MissingParam("Missing kind")
	}
	if bytes.Equal(rawKind, []byte("null")) {
		return s.deletePusher(ctx, userID, appID, pushkey)
	}
	var kind string
	if json.Unmarshal(rawKind, &kind) != nil {
		return merr.BadJSON("kind must be a string or null")
	}
	switch kind {
	case "http", "email":
	case "":
		return merr.MissingParam("Missing kind")
	default:
		return merr.InvalidParam("Unknown pusher kind %q: use http, email or null", kind)
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"app_display_name", req.AppDisplayName}, {"device_display_name", req.DeviceDisplayName}, {"lang", req.Lang}} {
		if err := required(f.name, f.v, maxFieldBytes); err != nil {
			return err
		}
	}
	if len(req.ProfileTag) > maxFieldBytes {
		return merr.InvalidParam("profile_tag is longer than %d bytes", maxFieldBytes)
	}
	data := bytes.TrimSpace(req.Data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return merr.MissingParam("Missing data")
	}
	if len(data) > maxDataBytes {
		return merr.TooLarge("data is larger than %d bytes", maxDataBytes)
	}
	var d map[string]json.RawMessage
	if data[0] != '{' || json.Unmarshal(data, &d) != nil {
		return merr.BadJSON("data must be an object")
	}
	p := &Pusher{Pushkey: pushkey, Kind: kind, AppID: appID, AppDisplayName: *req.AppDisplayName,
		DeviceDisplayName: *req.DeviceDisplayName, ProfileTag: req.ProfileTag, Lang: *req.Lang,
		userID: userID, deviceID: deviceID, pushkeyTS: time.Now().Unix()}
	var compact bytes.Buffer
	_ = json.Compact(&compact, data)
	p.Data = json.RawMessage(compact.Bytes())
	if p.Kind == "http" {
		var u string
		if raw, ok := d["url"]; !ok || json.Unmarshal(raw, &u) != nil || u == "" {
			return merr.MissingParam("An http pusher needs data.url")
		}
		if err := validGatewayURL(u); err != nil {
			return err
		}
		if raw, ok := d["format"]; ok {
			var f string
			if json.Unmarshal(raw, &f) != nil {
				return merr.InvalidParam("data.format must be a string")
			}
		}
	}
	p.finish()
	if old := s.pushers.find(userID, appID, pushkey); old != nil {
		p.pushkeyTS = old.pushkeyTS
	} else if len(s.pushers.of(userID)) >= MaxPushersPerUser {
		return merr.Custom(400, "M_RESOURCE_LIMIT_EXCEEDED", "You have %d pushers, the most allowed", MaxPushersPerUser)
	}
	var others []string // users whose pusher with this app_id and pushkey goes
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if !req.Append {
			rows, err := tx.Query(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3 RETURNING user_id`, appID, pushkey, userID)
			if err != nil {
				return fmt.Errorf("delete other pushers: %w", err)
			}
			for rows.Next() {
				var u string
				if err := rows.Scan(&u); err != nil {
					rows.Close()
					return err
				}
				others = append(others, u)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, pushkey_ts, device_id)
VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)
ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind, app_display_name = excluded.app_display_name,
device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,
device_id = excluded.device_id`,
			userID, appID, pushkey, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang, string(p.Data), p.pushkeyTS, deviceID)
		if err != nil {
			return fmt.Errorf("upsert pusher of %s: %w", userID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.updateIndex(userID, func(list []*Pusher) []*Pusher {
		out := make([]*Pusher, 0, len(list)+1)
		for _, x := range list {
			if x.AppID != appID || x.Pushkey != pushkey {
				out = append(out, x)
			}
		}
		return append(out, p)
	})
	for _, u := range others {
		s.dropFromIndex(u, appID, pushkey)
	}
	logging.From(ctx).WithField("user_id", userID).WithField("app_id", appID).Info("pusher set")
	return nil
}

// updateIndex changes a user's pushers in memory (serialised by the index lock).
func (s *Service) updateIndex(user string, fn func([]*Pusher) []*Pusher) {
	pi := s.pushers
	pi.mu.Lock()
	defer pi.mu.Unlock()
	list := fn(pi.byUser[user])
	if len(list) == 0 {
		delete(pi.byUser, user)
	} else {
		pi.byUser[user] = list
	}
}

func (s *Service) dropFromIndex(user, appID, pushkey string) {
	s.updateIndex(user, func(list []*Pusher) []*Pusher {
		out := make([]*Pusher, 0, len(list))
		for _, x := range list {
			if x.AppID != appID || x.Pushkey != pushkey {
				out = append(out, x)
			}
		}
		return out
	})
}

func (s *Service) deletePusher(ctx context.Context, userID, appID, pushkey string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id = $3`, appID, pushkey, userID); err != nil {
		return fmt.Errorf("delete pusher of %s: %w", userID, err)
	}
	s.dropFromIndex(userID, appID, pushkey)
	return nil
}

// removeRejected deletes a pusher whose gateway rejected its pushkey.
func (s *Service) removeRejected(ctx context.Context, userID, appID, pushkey string) {
	unlock := s.pusherLocks.Lock(userID)
	defer unlock()
	if err := s.deletePusher(ctx, userID, appID, pushkey); err != nil {
		logging.From(ctx).WithError(err).WithField("user_id", userID).Error("push: delete rejected pusher")
		return
	}
	logging.From(ctx).WithField("user_id", userID).WithField("app_id", appID).Info("push: gateway rejected the pushkey; pusher deleted")
}

// hasHTTPPushers tells whether a user has a pusher to deliver to.
func (s *Service) hasHTTPPushers(user string) bool {
	for _, p := range s.pushers.of(user) {
		if p.Kind == "http" {
			return true
		}
	}
	return false
}

// DevicesDeleted deletes the pushers that the user's deleted devices set:
// a device that logged out gets no more pushes.
func (s *Service) DevicesDeleted(ctx context.Context, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	unlock := s.pusherLocks.Lock(userID)
	defer unlock()
	gone := make(map[string]bool, len(deviceIDs))
	for _, d := range deviceIDs {
		gone[d] = true
	}
	for _, p := range s.pushers.of(userID) {
		if p.deviceID == "" || !gone[p.deviceID] {
			continue
		}
		if err := s.deletePusher(ctx, userID, p.AppID, p.Pushkey); err != nil {
			return err
		}
	}
	return nil
}
