package federationapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sync"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	userkeys "github.com/haven-chat/haven/userapi/keys"
)

// deviceUpdates records the device list EDUs handed on.
type deviceUpdates struct {
	mu      sync.Mutex
	devices []userkeys.DeviceListUpdate
	signing []userkeys.SigningKeyUpdate
}

func (d *deviceUpdates) DeviceListUpdate(_ context.Context, origin string, u userkeys.DeviceListUpdate) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.devices = append(d.devices, u)
	return nil
}

func (d *deviceUpdates) SigningKeyUpdate(_ context.Context, origin string, u userkeys.SigningKeyUpdate) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.signing = append(d.signing, u)
	return nil
}

func devicesPath(userID string) string {
	return "/_matrix/federation/v1/user/devices/" + url.PathEscape(userID)
}

const keysQueryPath = "/_matrix/federation/v1/user/keys/query"

// TestDeviceListEndpoints covers /user/devices and /user/keys/query (our
// users only, the right errors for anything else) and the device list
// EDUs of /send (only about the origin's users).
func TestDeviceListEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		ks, err := userkeys.New(ctx, db, nil, userkeys.Options{ServerName: localName})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ks.Close)
		upd := &deviceUpdates{}
		e.api.Keys, e.api.DeviceLists = ks, upd

		alice := "@alice:" + localName
		if err := db.Write(ctx, func(tx *storage.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO devices (user_id, device_id, display_name, token_hash, created_ts, last_seen_ts)
VALUES ($1, 'PHONE', 'Phone', 'h1', 0, 0)`, alice)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		ks.DevicesChanged(ctx, alice, []string{"PHONE"}, nil)
		dk, _ := json.Marshal(map[string]any{"user_id": alice, "device_id": "PHONE", "algorithms": []string{"m.megolm.v1.aes-sha2"},
			"keys": map[string]string{"ed25519:PHONE": "ed", "curve25519:PHONE": "cu"}, "signatures": map[string]any{alice: map[string]string{"ed25519:PHONE": "sig"}}})
		if _, err := ks.Upload(ctx, alice, "PHONE", userkeys.UploadRequest{DeviceKeys: dk}); err != nil {
			t.Fatal(err)
		}

		// /user/devices: signed, through the request authentication.
		r := e.doSigned("GET", devicesPath(alice), remoteName, e.remote, nil)
		wantOK(t, r)
		var devs userkeys.UserDevices
		r.decode(t, &devs)
		if devs.UserID != alice || devs.StreamID != ks.DeviceListPosition() || len(devs.Devices) != 1 ||
			devs.Devices[0].DisplayName != "Phone" || devs.Devices[0].Keys == nil {
			t.Fatalf("devices: %s", r.body)
		}
		// A user without devices: an empty list.
		r = e.do("GET", devicesPath("@nobody:"+localName), remoteName, nil)
		wantOK(t, r)
		r.decode(t, &devs)
		if len(devs.Devices) != 0 {
			t.Fatalf("unknown user: %s", r.body)
		}
		wantErr(t, e.do("GET", devicesPath("@rita:"+remoteName), remoteName, nil), http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, e.do("GET", devicesPath("not-a-user"), remoteName, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		if r := e.doSigned("GET", devicesPath(alice), remoteName, e.other, nil); r.status != http.StatusUnauthorized {
			t.Fatalf("bad signature: %d %s", r.status, r.body)
		}

		// /user/keys/query.
		r = e.do("POST", keysQueryPath, remoteName, map[string]any{"device_keys": map[string]any{alice: []string{}}})
		wantOK(t, r)
		var q userkeys.ServerQueryResponse
		r.decode(t, &q)
		if q.DeviceKeys[alice]["PHONE"] == nil {
			t.Fatalf("query: %s", r.body)
		}
		var raw map[string]json.RawMessage
		r.decode(t, &raw)
		if _, ok := raw["user_signing_keys"]; ok {
			t.Fatalf("user-signing keys answered to another server: %s", r.body)
		}
		for _, c := range []struct {
			name   string
			body   any
			status int
			code   string
		}{
			{"not JSON", "{nope", http.StatusBadRequest, "M_NOT_JSON"},
			{"no device_keys", map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM"},
			{"wrong type", map[string]any{"device_keys": map[string]any{alice: "PHONE"}}, http.StatusBadRequest, "M_BAD_JSON"},
			{"bad user ID", map[string]any{"device_keys": map[string]any{"nobody": []string{}}}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"another server's user", map[string]any{"device_keys": map[string]any{"@rita:" + remoteName: []string{}}}, http.StatusForbidden, "M_FORBIDDEN"},
		} {
			t.Run(c.name, func(t *testing.T) { wantErr(t, e.do("POST", keysQueryPath, remoteName, c.body), c.status, c.code) })
		}

		// EDUs: only about the origin's own users; malformed ones dropped.
		rita := "@rita:" + remoteName
		body := txn(nil,
			map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{"user_id": rita, "device_id": "R1", "stream_id": 2, "prev_id": []int{1}}},
			map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{"user_id": "@olga:" + otherName, "device_id": "O1", "stream_id": 2}},
			map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{"user_id": rita, "stream_id": "two"}},
			map[string]any{"edu_type": "m.device_list_update", "content": "nonsense"},
			map[string]any{"edu_type": "m.signing_key_update", "content": map[string]any{"user_id": rita, "master_key": map[string]any{"user_id": rita}}},
			map[string]any{"edu_type": "m.signing_key_update", "content": map[string]any{"user_id": alice}},
		)
		wantOK(t, e.do("PUT", sendPath("dl1"), remoteName, body))
		upd.mu.Lock()
		defer upd.mu.Unlock()
		if len(upd.devices) != 1 || upd.devices[0].UserID != rita || upd.devices[0].StreamID != 2 || upd.devices[0].PrevID[0] != 1 {
			t.Fatalf("device list updates handed on: %+v", upd.devices)
		}
		if len(upd.signing) != 1 || upd.signing[0].UserID != rita {
			t.Fatalf("signing key updates handed on: %+v", upd.signing)
		}
	})
}
