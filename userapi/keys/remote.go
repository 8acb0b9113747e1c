package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// Fetcher asks other servers about their users' keys (federationapi
// implements it over the signed federation client). A server's refusal is
// an *merr.Error with the status it answered.
type Fetcher interface {
	// UserDevices asks the user's server for the user's whole device list.
	UserDevices(ctx context.Context, userID string) (*UserDevices, error)
	// QueryKeys asks server for the keys of its users.
	QueryKeys(ctx context.Context, server string, want map[string][]string) (*ServerQueryResponse, error)
}

// Rooms tells who shares a room with whom (the roomserver).
type Rooms interface {
	SharesRoomWithServer(ctx context.Context, userID, server string) (bool, error)
	JoinedUsers(ctx context.Context, roomID string) ([]string, error)
}

// Subscriber is the bus, as the remote device lists need it.
type Subscriber interface {
	Subscribe(topic string, fn func(data []byte)) (func(), error)
}

// DefaultQueryTimeout is how long /keys/query waits for other servers when
// the request names no timeout.
const DefaultQueryTimeout = 10 * time.Second

// Bounds of what other servers tell us.
const (
	maxRemoteKeyBytes  = 64 << 10
	maxRemoteNameBytes = 1024
	maxRemoteDevices   = 1000
	resyncTimeout      = 30 * time.Second
	resyncsAtOnce      = 4
)

// Remote keeps the device lists and cross-signing keys of other servers'
// users who share a room with ours (tables remote_device_lists,
// remote_device_keys, remote_cross_signing_keys) and answers /keys/query
// about them: from the cache for the users it tracks, from their servers
// otherwise. A change of a tracked user's list is recorded on the device
// list stream, so /sync and /keys/changes report it like a local one.
type Remote struct {
	s     *Service
	fetch Fetcher
	rooms Rooms
	log   *logrus.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{}
	unsub  func()

	mu        sync.Mutex
	resyncing map[string]bool
}

// NewRemote makes the remote device lists of the key service.
func NewRemote(s *Service, fetch Fetcher, rooms Rooms, log *logrus.Logger) *Remote {
	ctx, cancel := context.WithCancel(context.Background())
	return &Remote{s: s, fetch: fetch, rooms: rooms, log: log, ctx: ctx, cancel: cancel,
		sem: make(chan struct{}, resyncsAtOnce), resyncing: map[string]bool{}}
}

// Start follows the room events (roomTopic) to stop tracking users who no
// longer share a room with ours, and checks the users tracked now in the
// background (a leave missed while the server was down).
func (r *Remote) Start(bus Subscriber, roomTopic string) error {
	unsub, err := bus.Subscribe(roomTopic, r.onRoomEvent)
	if err != nil {
		return fmt.Errorf("remote device lists: %w", err)
	}
	r.unsub = unsub
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := r.sweep(r.ctx); err != nil && r.ctx.Err() == nil {
			r.log.WithError(err).Warn("remote device lists: checking the tracked users failed")
		}
	}()
	return nil
}

// Close stops following room events and waits for running refetches.
func (r *Remote) Close() {
	if r.unsub != nil {
		r.unsub()
	}
	r.cancel()
	r.wg.Wait()
}

// ---- /keys/query ----

// Query answers a client's /keys/query: our users from the key service,
// tracked users of other servers from the cache, the others from their
// servers, asked in parallel and waited for at most timeout (0: the
// default). A server that fails or does not answer in time is in
// failures. What a server answers about users who share a room with ours
// is cached.
func (r *Remote) Query(ctx context.Context, requester string, want map[string][]string, timeout time.Duration) (*QueryResponse, error) {
	local := map[string][]string{}
	remote := map[string][]string{}
	for u, devs := range want {
		if err := CheckUserID(u); err != nil {
			return nil, err
		}
		if serverOf(u) == r.s.opts.ServerName {
			local[u] = devs
		} else {
			remote[u] = devs
		}
	}
	resp, err := r.s.Query(ctx, requester, local)
	if err != nil || len(remote) == 0 {
		return resp, err
	}
	users := sortedKeys(remote)
	cached, err := r.cached(ctx, users)
	if err != nil {
		return nil, err
	}
	cold := map[string][]string{}
	for _, u := range users {
		c, ok := cached[u]
		if !ok {
			cold[serverOf(u)] = append(cold[serverOf(u)], u)
			continue
		}
		devs := map[string]json.RawMessage{}
		for id, d := range c.devices {
			if only := remote[u]; len(only) > 0 && !contains(only, id) || d.keys == "" {
				continue
			}
			devs[id] = deviceWithName(d.keys, d.name)
		}
		resp.DeviceKeys[u] = devs
		if c.master != "" {
			resp.MasterKeys[u] = json.RawMessage(c.master)
		}
		if c.ssk != "" {
			resp.SelfSigningKeys[u] = json.RawMessage(c.ssk)
		}
	}
	if len(cold) == 0 {
		return resp, nil
	}
	if timeout <= 0 {
		timeout = DefaultQueryTimeout
	}
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type answer struct {
		server string
		users  []string
		resp   *ServerQueryResponse
		err    error
	}
	answers := make(chan answer, len(cold))
	for server, us := range cold {
		go func() {
			// Every device of every user: what is cached must be whole.
			ask := make(map[string][]string, len(us))
			for _, u := range us {
				ask[u] = []string{}
			}
			a, err := r.fetch.QueryKeys(qctx, server, ask)
			answers <- answer{server, us, a, err}
		}()
	}
	for n := len(cold); n > 0; n-- {
		var a answer
		select {
		case a = <-answers:
		case <-qctx.Done():
			// The fetches end with qctx; those not in yet are failures.
		}
		if a.server == "" {
			break
		}
		if a.err != nil {
			resp.Failures[a.server] = failureOf(a.err, qctx)
			delete(cold, a.server)
			continue
		}
		delete(cold, a.server)
		r.useAnswer(ctx, a.users, remote, a.resp, resp)
	}
	for server := range cold {
		resp.Failures[server] = json.RawMessage(`{"status":504,"message":"The server did not answer in time"}`)
	}
	return resp, nil
}

// failureOf is the failures entry of a server whose answer failed.
func failureOf(err error, ctx context.Context) json.RawMessage {
	status, msg := http.StatusServiceUnavailable, err.Error()
	if me, ok := merr.As(err); ok {
		status, msg = me.Status, me.Msg
	}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		status, msg = http.StatusGatewayTimeout, "The server did not answer in time"
	}
	out, _ := json.Marshal(map[string]any{"status": status, "message": msg})
	return out
}

// useAnswer puts a server's answer about users into the response (the
// devices asked for) and caches it for the users who share a room with
// ours. What the server says of users it was not asked about, or keys
// naming another user or device, is dropped.
func (r *Remote) useAnswer(ctx context.Context, users []string, want map[string][]string, a *ServerQueryResponse, resp *QueryResponse) {
	for _, u := range users {
		full := map[string]string{}
		devs := map[string]json.RawMessage{}
		names := map[string]string{}
		for id, raw := range a.DeviceKeys[u] {
			js, name, err := checkRemoteDeviceKeys(raw, u, id)
			if err != nil {
				continue
			}
			full[id], names[id] = js, name
			if only := want[u]; len(only) == 0 || contains(only, id) {
				devs[id] = deviceWithName(js, name)
			}
		}
		resp.DeviceKeys[u] = devs
		master, ssk := "", ""
		if raw, ok := a.MasterKeys[u]; ok && checkCrossSigningKey(raw, u) == nil {
			resp.MasterKeys[u], master = raw, string(raw)
		}
		if raw, ok := a.SelfSigningKeys[u]; ok && checkCrossSigningKey(raw, u) == nil {
			resp.SelfSigningKeys[u], ssk = raw, string(raw)
		}
		if _, ok := a.DeviceKeys[u]; !ok {
			continue // the server did not answer about the user
		}
		shares, err := r.rooms.SharesRoomWithServer(ctx, u, r.s.opts.ServerName)
		if err != nil || !shares {
			continue
		}
		list := UserDevices{UserID: u}
		for _, id := range sortedKeys(full) {
			list.Devices = append(list.Devices, UserDevice{DeviceID: id, DisplayName: names[id], Keys: json.RawMessage(full[id])})
		}
		list.MasterKey, list.SelfSigningKey = rawOrNil(master), rawOrNil(ssk)
		if err := r.startTracking(ctx, &list); err != nil {
			logging.From(ctx).WithError(err).WithField("user_id", u).Warn("remote device lists: caching an answer failed")
		}
	}
}

func rawOrNil(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// deviceWithName returns stored device keys with the device's name in
// "unsigned", as /keys/query answers them.
func deviceWithName(js, name string) json.RawMessage {
	unsigned := map[string]any{}
	if name != "" {
		unsigned["device_display_name"] = name
	}
	return withSignatures(js, nil, unsigned)
}

// checkRemoteDeviceKeys checks device keys another server gave for (user,
// device) and returns them without "unsigned", and the device's name from
// there.
func checkRemoteDeviceKeys(raw json.RawMessage, userID, deviceID string) (js, name string, err error) {
	if len(raw) > maxRemoteKeyBytes {
		return "", "", fmt.Errorf("device keys of %s %s too large", userID, deviceID)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return "", "", fmt.Errorf("device keys of %s %s: not an object", userID, deviceID)
	}
	var u, d string
	if json.Unmarshal(obj["user_id"], &u) != nil || json.Unmarshal(obj["device_id"], &d) != nil || u != userID || d != deviceID {
		return "", "", fmt.Errorf("device keys of %s %s name another device", userID, deviceID)
	}
	if !storage.StorableText(deviceID) || len(deviceID) > 255 {
		return "", "", fmt.Errorf("device ID of %s unusable", userID)
	}
	if un, ok := obj["unsigned"]; ok {
		var f struct {
			Name string `json:"device_display_name"`
		}
		if json.Unmarshal(un, &f) == nil {
			name = cleanName(f.Name)
		}
		delete(obj, "unsigned")
	}
	out, err := json.Marshal(obj)
	if err != nil || !storage.StorableText(string(out)) {
		return "", "", fmt.Errorf("device keys of %s %s unusable", userID, deviceID)
	}
	return string(out), name, nil
}

// checkCrossSigningKey checks a cross-signing key another server gave for
// one of its users.
func checkCrossSigningKey(raw json.RawMessage, userID string) error {
	if len(raw) > maxRemoteKeyBytes || !storage.StorableText(string(raw)) {
		return fmt.Errorf("cross-signing key of %s unusable", userID)
	}
	var f struct {
		UserID string            `json:"user_id"`
		Keys   map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(raw, &f); err != nil || f.UserID != userID || len(f.Keys) != 1 {
		return fmt.Errorf("cross-signing key of %s unusable", userID)
	}
	return nil
}

// cleanName keeps a remote device name if it is storable and not too long.
func cleanName(name string) string {
	if len(name) > maxRemoteNameBytes || !storage.StorableText(name) {
		return ""
	}
	return name
}

// ---- the cache ----

type cachedDevice struct{ keys, name string }

type cachedUser struct {
	devices     map[string]cachedDevice
	master, ssk string
}

// cached loads the cached lists of the users tracked and up to date.
func (r *Remote) cached(ctx context.Context, users []string) (map[string]*cachedUser, error) {
	out := map[string]*cachedUser{}
	db := r.s.db
	rows, err := db.Query(ctx, `SELECT user_id FROM remote_device_lists WHERE user_id IN ($1) AND stale = FALSE`, users)
	if err != nil {
		return nil, fmt.Errorf("select remote device lists: %w", err)
	}
	var fresh []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			rows.Close()
			return nil, fmt.Errorf("select remote device lists: %w", err)
		}
		out[u] = &cachedUser{devices: map[string]cachedDevice{}}
		fresh = append(fresh, u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("select remote device lists: %w", err)
	}
	if len(fresh) == 0 {
		return out, nil
	}
	rows, err = db.Query(ctx, `SELECT user_id, device_id, key_json, display_name FROM remote_device_keys WHERE user_id IN ($1)`, fresh)
	if err != nil {
		return nil, fmt.Errorf("select remote device keys: %w", err)
	}
	for rows.Next() {
		var u, d string
		var js, name sql.NullString
		if err := rows.Scan(&u, &d, &js, &name); err != nil {
			rows.Close()
			return nil, fmt.Errorf("select remote device keys: %w", err)
		}
		if c := out[u]; c != nil {
			c.devices[d] = cachedDevice{js.String, name.String}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("select remote device keys: %w", err)
	}
	rows, err = db.Query(ctx, `SELECT user_id, key_type, key_json FROM remote_cross_signing_keys WHERE user_id IN ($1)`, fresh)
	if err != nil {
		return nil, fmt.Errorf("select remote cross-signing keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u, t, js string
		if err := rows.Scan(&u, &t, &js); err != nil {
			return nil, fmt.Errorf("select remote cross-signing keys: %w", err)
		}
		if c := out[u]; c != nil {
			switch t {
			case KeyMaster:
				c.master = js
			case KeySelfSigning:
				c.ssk = js
			}
		}
	}
	return out, rows.Err()
}

// startTracking caches a user's list found by /user/keys/query (no stream
// position: the first update from the user's server that names earlier
// ones makes us refetch the list). A user tracked meanwhile is left as
// the update that tracked it made it.
func (r *Remote) startTracking(ctx context.Context, list *UserDevices) error {
	unlock := r.s.userLocks.Lock(list.UserID)
	defer unlock()
	return r.s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, stale, ts) VALUES ($1, 0, FALSE, $2)
ON CONFLICT (user_id) DO NOTHING`, list.UserID, r.s.now().UnixMilli())
		if err != nil {
			return fmt.Errorf("track %s: %w", list.UserID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return writeList(ctx, tx, list)
	})
}

// writeList replaces the cached devices and cross-signing keys of a user.
func writeList(ctx context.Context, tx *storage.Tx, list *UserDevices) error {
	u := list.UserID
	for _, table := range []string{"remote_device_keys", "remote_cross_signing_keys"} {
		if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE user_id = $1`, u); err != nil {
			return fmt.Errorf("replace the cached keys of %s: %w", u, err)
		}
	}
	for _, d := range list.Devices {
		if err := putRemoteDevice(ctx, tx, u, d.DeviceID, d.DisplayName, d.Keys); err != nil {
			return err
		}
	}
	return putRemoteCrossSigning(ctx, tx, u, list.MasterKey, list.SelfSigningKey)
}

func putRemoteDevice(ctx context.Context, tx *storage.Tx, userID, deviceID, name string, keys json.RawMessage) error {
	var js any
	if len(keys) > 0 && string(keys) != "null" {
		js = string(keys)
	}
	var dn any
	if name != "" {
		dn = name
	}
	if _, err := tx.Exec(ctx, `INSERT INTO remote_device_keys (user_id, device_id, key_json, display_name) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, display_name = excluded.display_name`, userID, deviceID, js, dn); err != nil {
		return fmt.Errorf("cache device %s of %s: %w", deviceID, userID, err)
	}
	return nil
}

func putRemoteCrossSigning(ctx context.Context, tx *storage.Tx, userID string, master, ssk json.RawMessage) error {
	for typ, raw := range map[string]json.RawMessage{KeyMaster: master, KeySelfSigning: ssk} {
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json`, userID, typ, string(raw)); err != nil {
			return fmt.Errorf("cache %s key of %s: %w", typ, userID, err)
		}
	}
	return nil
}

// listState reads a tracked user's stream position; ok is false when the
// user is not tracked.
func listState(ctx context.Context, q storage.Querier, userID string) (streamID int64, stale, ok bool, err error) {
	err = q.QueryRow(ctx, `SELECT stream_id, stale FROM remote_device_lists WHERE user_id = $1`, userID).Scan(&streamID, &stale)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, false, nil
	}
	if err != nil {
		return 0, false, false, fmt.Errorf("select remote device list of %s: %w", userID, err)
	}
	return streamID, stale, true, nil
}

// ---- updates from other servers ----

// DeviceListUpdate applies an m.device_list_update EDU of origin. The
// update of a user we do not track starts tracking them if they share a
// room with ours (their list is fetched), and is dropped otherwise. An update that follows the ones applied is applied and
// recorded on the device list stream; one naming an update we have not
// seen marks the list stale and refetches it from the user's server.
func (r *Remote) DeviceListUpdate(ctx context.Context, origin string, u DeviceListUpdate) error {
	if serverOf(u.UserID) != origin || origin == r.s.opts.ServerName {
		return merr.Forbidden("%s may not update the devices of %q", origin, u.UserID)
	}
	if u.DeviceID == "" || len(u.DeviceID) > 255 || !storage.StorableText(u.DeviceID) || u.StreamID <= 0 {
		return merr.InvalidParam("Malformed device list update")
	}
	var keys string
	if len(u.Keys) > 0 && string(u.Keys) != "null" && !u.Deleted {
		js, _, err := checkRemoteDeviceKeys(u.Keys, u.UserID, u.DeviceID)
		if err != nil {
			return merr.InvalidParam("%v", err)
		}
		keys = js
	}
	name := cleanName(u.DisplayName)
	unlock := r.s.userLocks.Lock(u.UserID)
	stream, stale, tracked, err := listState(ctx, r.s.db, u.UserID)
	if err == nil && !tracked {
		unlock()
		return r.trackFromUpdate(ctx, u.UserID)
	}
	if err != nil || u.StreamID <= stream {
		unlock()
		return err
	}
	gap := stale
	for _, p := range u.PrevID {
		if p > stream {
			gap = true
		}
	}
	if gap {
		err = r.markStale(ctx, u.UserID, stale)
		unlock()
		if err == nil {
			r.scheduleResync(u.UserID)
		}
		return err
	}
	err = r.s.changeDeviceList(ctx, u.UserID, listChange{}, func(tx *storage.Tx) (bool, error) {
		if u.Deleted {
			if _, err := tx.Exec(ctx, `DELETE FROM remote_device_keys WHERE user_id = $1 AND device_id = $2`, u.UserID, u.DeviceID); err != nil {
				return false, fmt.Errorf("delete cached device %s of %s: %w", u.DeviceID, u.UserID, err)
			}
		} else if err := putRemoteDevice(ctx, tx, u.UserID, u.DeviceID, name, json.RawMessage(keys)); err != nil {
			return false, err
		}
		if _, err := tx.Exec(ctx, `UPDATE remote_device_lists SET stream_id = $2, ts = $3 WHERE user_id = $1`, u.UserID, u.StreamID, r.s.now().UnixMilli()); err != nil {
			return false, fmt.Errorf("update remote device list of %s: %w", u.UserID, err)
		}
		return true, nil
	})
	unlock()
	return err
}

// trackFromUpdate starts tracking a user whose update came while we did
// not track them, when they share a room with ours (an update of anyone
// else is dropped): the list is fetched from their server, and its
// arrival is a device list change our users see.
func (r *Remote) trackFromUpdate(ctx context.Context, userID string) error {
	shares, err := r.rooms.SharesRoomWithServer(ctx, userID, r.s.opts.ServerName)
	if err != nil || !shares {
		return err
	}
	err = r.s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, stale, ts) VALUES ($1, 0, TRUE, $2)
ON CONFLICT (user_id) DO NOTHING`, userID, r.s.now().UnixMilli()); err != nil {
			return fmt.Errorf("track %s: %w", userID, err)
		}
		return nil
	})
	if err == nil {
		r.scheduleResync(userID)
	}
	return err
}

func (r *Remote) markStale(ctx context.Context, userID string, already bool) error {
	if already {
		return nil
	}
	return r.s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE remote_device_lists SET stale = TRUE WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("mark the device list of %s stale: %w", userID, err)
		}
		return nil
	})
}

// SigningKeyUpdate applies an m.signing_key_update EDU of origin to a
// tracked user's cached cross-signing keys.
func (r *Remote) SigningKeyUpdate(ctx context.Context, origin string, u SigningKeyUpdate) error {
	if serverOf(u.UserID) != origin || origin == r.s.opts.ServerName {
		return merr.Forbidden("%s may not update the keys of %q", origin, u.UserID)
	}
	for _, raw := range []json.RawMessage{u.MasterKey, u.SelfSigningKey} {
		if len(raw) > 0 && string(raw) != "null" {
			if err := checkCrossSigningKey(raw, u.UserID); err != nil {
				return merr.InvalidParam("%v", err)
			}
		}
	}
	unlock := r.s.userLocks.Lock(u.UserID)
	defer unlock()
	_, _, tracked, err := listState(ctx, r.s.db, u.UserID)
	if err != nil || !tracked {
		return err
	}
	return r.s.changeDeviceList(ctx, u.UserID, listChange{}, func(tx *storage.Tx) (bool, error) {
		return true, putRemoteCrossSigning(ctx, tx, u.UserID, u.MasterKey, u.SelfSigningKey)
	})
}

// scheduleResync refetches a user's list in the background, once at a time.
func (r *Remote) scheduleResync(userID string) {
	r.mu.Lock()
	if r.resyncing[userID] || r.ctx.Err() != nil {
		r.mu.Unlock()
		return
	}
	r.resyncing[userID] = true
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		defer func() {
			r.mu.Lock()
			delete(r.resyncing, userID)
			r.mu.Unlock()
		}()
		select {
		case r.sem <- struct{}{}:
		case <-r.ctx.Done():
			return
		}
		defer func() { <-r.sem }()
		if err := r.Resync(r.ctx, userID); err != nil && r.ctx.Err() == nil {
			r.log.WithError(err).WithField("user_id", userID).Warn("remote device lists: refetching a device list failed")
		}
	}()
}

// Resync fetches a tracked user's whole list from the user's server and
// replaces the cached one, recording the change on the device list stream;
// a user who no longer shares a room with ours stops being tracked.
func (r *Remote) Resync(ctx context.Context, userID string) error {
	shares, err := r.rooms.SharesRoomWithServer(ctx, userID, r.s.opts.ServerName)
	if err != nil {
		return err
	}
	if !shares {
		return r.untrack(ctx, userID)
	}
	fctx, cancel := context.WithTimeout(ctx, resyncTimeout)
	list, err := r.fetch.UserDevices(fctx, userID)
	cancel()
	if err != nil {
		return err
	}
	if list.UserID != userID || len(list.Devices) > maxRemoteDevices {
		return fmt.Errorf("%s answered an unusable device list for %s", serverOf(userID), userID)
	}
	clean := &UserDevices{UserID: userID, StreamID: list.StreamID}
	for _, d := range list.Devices {
		dev := UserDevice{DeviceID: d.DeviceID, DisplayName: cleanName(d.DisplayName)}
		if len(d.Keys) > 0 && string(d.Keys) != "null" {
			js, _, err := checkRemoteDeviceKeys(d.Keys, userID, d.DeviceID)
			if err != nil {
				continue
			}
			dev.Keys = json.RawMessage(js)
		} else if d.DeviceID == "" || len(d.DeviceID) > 255 || !storage.StorableText(d.DeviceID) {
			continue
		}
		clean.Devices = append(clean.Devices, dev)
	}
	if checkCrossSigningKey(list.MasterKey, userID) == nil {
		clean.MasterKey = list.MasterKey
	}
	if checkCrossSigningKey(list.SelfSigningKey, userID) == nil {
		clean.SelfSigningKey = list.SelfSigningKey
	}
	unlock := r.s.userLocks.Lock(userID)
	defer unlock()
	return r.s.changeDeviceList(ctx, userID, listChange{}, func(tx *storage.Tx) (bool, error) {
		if _, _, tracked, err := listState(ctx, tx, userID); err != nil || !tracked {
			return false, err
		}
		if err := writeList(ctx, tx, clean); err != nil {
			return false, err
		}
		if _, err := tx.Exec(ctx, `UPDATE remote_device_lists SET stream_id = $2, stale = FALSE, ts = $3 WHERE user_id = $1`,
			userID, clean.StreamID, r.s.now().UnixMilli()); err != nil {
			return false, fmt.Errorf("update remote device list of %s: %w", userID, err)
		}
		return true, nil
	})
}

// ---- tracking ends ----

// untrack forgets a user's cached list.
func (r *Remote) untrack(ctx context.Context, userID string) error {
	unlock := r.s.userLocks.Lock(userID)
	defer unlock()
	return r.s.db.Write(ctx, func(tx *storage.Tx) error {
		for _, table := range []string{"remote_device_lists", "remote_device_keys", "remote_cross_signing_keys"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE user_id = $1`, userID); err != nil {
				return fmt.Errorf("forget the device list of %s: %w", userID, err)
			}
		}
		return nil
	})
}

// onRoomEvent stops tracking the users of other servers who, after a
// leave (or ban), share no room with ours any more: the user who left, or
// when one of ours left, the room's members of other servers.
func (r *Remote) onRoomEvent(data []byte) {
	var ev struct {
		RoomID     string  `json:"room_id"`
		Type       string  `json:"type"`
		StateKey   *string `json:"state_key"`
		Membership string  `json:"membership"`
	}
	if json.Unmarshal(data, &ev) != nil || ev.Type != "m.room.member" || ev.StateKey == nil || ev.Membership == "join" || ev.Membership == "" {
		return
	}
	ctx := r.ctx
	candidates := []string{*ev.StateKey}
	if serverOf(*ev.StateKey) == r.s.opts.ServerName {
		members, err := r.rooms.JoinedUsers(ctx, ev.RoomID)
		if err != nil {
			r.log.WithError(err).WithField("room_id", ev.RoomID).Warn("remote device lists: reading a room's members failed")
			return
		}
		candidates = candidates[:0]
		for _, m := range members {
			if serverOf(m) != r.s.opts.ServerName {
				candidates = append(candidates, m)
			}
		}
	}
	if err := r.checkTracked(ctx, candidates); err != nil && ctx.Err() == nil {
		r.log.WithError(err).WithField("room_id", ev.RoomID).Warn("remote device lists: checking the tracked users failed")
	}
}

// checkTracked stops tracking those of the users who are tracked and no
// longer share a room with ours.
func (r *Remote) checkTracked(ctx context.Context, users []string) error {
	if len(users) == 0 {
		return nil
	}
	for start := 0; start < len(users); start += 500 {
		batch := users[start:min(start+500, len(users))]
		rows, err := r.s.db.Query(ctx, `SELECT user_id FROM remote_device_lists WHERE user_id IN ($1)`, batch)
		if err != nil {
			return fmt.Errorf("select tracked users: %w", err)
		}
		var tracked []string
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return fmt.Errorf("select tracked users: %w", err)
			}
			tracked = append(tracked, u)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("select tracked users: %w", err)
		}
		for _, u := range tracked {
			shares, err := r.rooms.SharesRoomWithServer(ctx, u, r.s.opts.ServerName)
			if err != nil {
				return err
			}
			if !shares {
				if err := r.untrack(ctx, u); err != nil {
					return err
				}
				logging.From(ctx).WithField("user_id", u).Debug("remote device lists: no shared room left; the list is forgotten")
			}
		}
	}
	return nil
}

// sweep checks every tracked user.
func (r *Remote) sweep(ctx context.Context) error {
	rows, err := r.s.db.Query(ctx, `SELECT user_id FROM remote_device_lists`)
	if err != nil {
		return fmt.Errorf("select tracked users: %w", err)
	}
	var all []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			rows.Close()
			return fmt.Errorf("select tracked users: %w", err)
		}
		all = append(all, u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("select tracked users: %w", err)
	}
	sort.Strings(all)
	return r.checkTracked(ctx, all)
}
