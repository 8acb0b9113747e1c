package sytest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/haven-chat/haven/internal/testca"
)

// toDeviceSeen collects the "n" of the to-device messages of type typ
// from sender in a sync response.
func toDeviceSeen(r *mautrix.RespSync, typ string, sender id.UserID, into *[]int) {
	for _, ev := range r.ToDevice.Events {
		if ev.Type.Type == typ && ev.Sender == sender {
			n, _ := ev.Content.Raw["n"].(float64)
			*into = append(*into, int(n))
		}
	}
}

// TestFederationToDevice: to-device messages cross sites — to one device
// and to all of a user's devices ("*"), each delivered once, a retried
// request (same transaction ID) too — and messages sent while the other
// site is down arrive, once each and in order, when it is back.
func TestFederationToDevice(t *testing.T) {
	a, b := startSites(t)
	ctx := context.Background()
	alice := a.register(t, "alice")
	bob := b.register(t, "bob")
	bob2 := b.login(t, "bob")
	_, bobSince := syncNow(t, bob, "")
	_, bob2Since := syncNow(t, bob2, "")
	const typ = "org.haven.test"
	send := func(txnID string, messages map[string]any) {
		t.Helper()
		a.do(t, "PUT", v3+"/sendToDevice/"+typ+"/"+txnID, alice.AccessToken, map[string]any{"messages": messages}).expect(t, 200)
	}
	toBob1 := func(n int) map[string]any {
		return map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]any{"n": n}}}
	}
	toAllBob := func(n int) map[string]any {
		return map[string]any{bob.UserID.String(): map[string]any{"*": map[string]any{"n": n}}}
	}

	// One device, the same request twice, then every device.
	first := txn()
	send(first, toBob1(1))
	send(first, toBob1(1))
	send(txn(), toAllBob(2))
	// A last one to all: anything sent twice would have come before it.
	send(txn(), toAllBob(3))
	var got1, got2 []int
	_, bobSince = syncUntil(t, bob, bobSince, "the messages from the other site", func(r *mautrix.RespSync) bool {
		toDeviceSeen(r, typ, alice.UserID, &got1)
		return slices.Contains(got1, 3)
	})
	_, bob2Since = syncUntil(t, bob2, bob2Since, "the messages to every device", func(r *mautrix.RespSync) bool {
		toDeviceSeen(r, typ, alice.UserID, &got2)
		return slices.Contains(got2, 3)
	})
	if !slices.Equal(got1, []int{1, 2, 3}) || !slices.Equal(got2, []int{2, 3}) {
		t.Fatalf("bob's first device got %v, his second %v", got1, got2)
	}
	// Synced past them, nothing comes again.
	if resp, _ := syncNow(t, bob, bobSince); len(resp.ToDevice.Events) != 0 {
		t.Fatalf("delivered again: %d", len(resp.ToDevice.Events))
	}

	// Site B stops; alice sends on; B comes back and gets them all, once
	// and in order.
	b.stop()
	for n := 4; n <= 8; n++ {
		send(txn(), toBob1(n))
	}
	retried := txn()
	send(retried, toBob1(9))
	send(retried, toBob1(9))
	b.start()
	// B talking to A ends A's wait before its next attempt.
	if _, err := bob.GetProfile(ctx, alice.UserID); err != nil {
		t.Logf("profile of alice: %v", err)
	}
	send(txn(), toBob1(10))
	got1 = nil
	syncUntil(t, bob, bobSince, "the messages sent while site B was down", func(r *mautrix.RespSync) bool {
		toDeviceSeen(r, typ, alice.UserID, &got1)
		return slices.Contains(got1, 10)
	})
	if !slices.Equal(got1, []int{4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("after site B's restart bob got %v", got1)
	}
}

// TestFederationKeyClaim: a user claims one-time keys of the other site's
// user: each key once, then the fallback key; a device without keys is
// left out and a server outside the allowlist is a failure.
func TestFederationKeyClaim(t *testing.T) {
	a, b := startSites(t)
	ctx := context.Background()
	alice := a.register(t, "alice")
	bob := b.register(t, "bob")
	bobKey := newTestKey(t)
	otk := func(n int) json.RawMessage {
		return bobKey.sign(t, bob.UserID.String(), "ed25519:"+bob.DeviceID.String(), map[string]any{"key": fmt.Sprintf("otk%d", n)})
	}
	b.do(t, "POST", v3+"/keys/upload", bob.AccessToken, map[string]any{
		"device_keys":   deviceKeysOf(t, bob, bobKey),
		"one_time_keys": map[string]any{"signed_curve25519:AAAA": otk(1), "signed_curve25519:AAAB": otk(2)},
		"fallback_keys": map[string]any{"signed_curve25519:FFFF": map[string]any{"key": "fallback", "fallback": true}},
	}).expect(t, 200)

	var claimed []id.KeyID
	for i := 0; i < 3; i++ {
		c, err := alice.ClaimKeys(ctx, &mautrix.ReqClaimKeys{Timeout: 10000, OneTimeKeys: mautrix.OneTimeKeysRequest{
			bob.UserID: {bob.DeviceID: id.KeyAlgorithmSignedCurve25519, "NOSUCHDEVICE": id.KeyAlgorithmSignedCurve25519},
		}})
		if err != nil {
			t.Fatal(err)
		}
		keys := c.OneTimeKeys[bob.UserID][bob.DeviceID]
		if len(keys) != 1 || len(c.Failures) != 0 || len(c.OneTimeKeys[bob.UserID]) != 1 {
			t.Fatalf("claim %d: %+v", i, c)
		}
		for kid := range keys {
			claimed = append(claimed, kid)
		}
	}
	if !slices.Equal(claimed, []id.KeyID{"signed_curve25519:AAAA", "signed_curve25519:AAAB", "signed_curve25519:FFFF"}) {
		t.Fatalf("claimed %v", claimed)
	}
	// The keys' counts on B went down.
	if resp, _ := syncNow(t, bob, ""); resp.DeviceOTKCount.SignedCurve25519 != 0 {
		t.Fatalf("bob's count after the claims: %+v", resp.DeviceOTKCount)
	}

	// A server the allowlist refuses is a failure; the rest is answered.
	r := a.do(t, "POST", v3+"/keys/claim", alice.AccessToken, map[string]any{"timeout": 5000, "one_time_keys": map[string]any{
		"@x:refused.example": map[string]any{"D": "signed_curve25519"},
		bob.UserID.String():  map[string]any{bob.DeviceID.String(): "signed_curve25519"},
	}}).expect(t, 200)
	var ans struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
		Failures    map[string]struct {
			Status int `json:"status"`
		} `json:"failures"`
	}
	if err := json.Unmarshal(r.Raw, &ans); err != nil {
		t.Fatal(err)
	}
	if ans.Failures["refused.example"].Status != 403 || len(ans.OneTimeKeys[bob.UserID.String()][bob.DeviceID.String()]) != 1 {
		t.Fatalf("claim with a refused server: %s", r)
	}

	// And the other way: B claims A's key (both databases serve claims).
	a.do(t, "POST", v3+"/keys/upload", alice.AccessToken, map[string]any{
		"one_time_keys": map[string]any{"signed_curve25519:CCCC": map[string]any{"key": "alice"}},
	}).expect(t, 200)
	for i, want := range []int{1, 0} {
		c, err := bob.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{alice.UserID: {alice.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
		if err != nil || len(c.OneTimeKeys[alice.UserID][alice.DeviceID]) != want || len(c.Failures) != 0 {
			t.Fatalf("bob's claim %d: %+v %v", i, c, err)
		}
	}
}

// TestToDeviceWithDendrite: to-device messages and one-time key claims
// between Haven and another implementation, both ways.
func TestToDeviceWithDendrite(t *testing.T) {
	ca := testca.New(t)
	cert, key := ca.Issue(t, "localhost")
	d := startDendrite(t, ca, cert, key)
	h := startSite(t, "sqlite", ca, cert, key, freePort(t), d.name)
	ctx := context.Background()
	hank, dave := h.register(t, "hank"), d.register(t, "dave")
	_, hankSince := syncNow(t, hank, "")
	_, daveSince := syncNow(t, dave, "")
	const typ = "org.haven.test"

	// Haven to Dendrite, to one device and to all.
	for n, dev := range []string{dave.DeviceID.String(), "*"} {
		h.do(t, "PUT", v3+"/sendToDevice/"+typ+"/"+txn(), hank.AccessToken, map[string]any{"messages": map[string]any{
			dave.UserID.String(): map[string]any{dev: map[string]any{"n": n + 1}}}}).expect(t, 200)
	}
	var got []int
	syncUntil(t, dave, daveSince, "Haven's to-device messages", func(r *mautrix.RespSync) bool {
		toDeviceSeen(r, typ, hank.UserID, &got)
		return len(got) >= 2
	})
	if !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("Dendrite's user got %v", got)
	}
	// Dendrite to Haven.
	if _, err := dave.SendToDevice(ctx, event.Type{Type: typ, Class: event.ToDeviceEventType}, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
		hank.UserID: {"*": {Raw: map[string]any{"n": 3}}},
	}}); err != nil {
		t.Fatal(err)
	}
	got = nil
	syncUntil(t, hank, hankSince, "Dendrite's to-device message", func(r *mautrix.RespSync) bool {
		toDeviceSeen(r, typ, dave.UserID, &got)
		return len(got) >= 1
	})
	if !slices.Equal(got, []int{3}) {
		t.Fatalf("Haven's user got %v", got)
	}

	// Key claims both ways.
	if _, err := dave.UploadKeys(ctx, &mautrix.ReqUploadKeys{OneTimeKeys: map[id.KeyID]mautrix.OneTimeKey{
		"signed_curve25519:DDDD": {Key: "dave-key"},
	}}); err != nil {
		t.Fatal(err)
	}
	c, err := hank.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{dave.UserID: {dave.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
	if err != nil || len(c.OneTimeKeys[dave.UserID][dave.DeviceID]) != 1 || len(c.Failures) != 0 {
		t.Fatalf("Haven claims Dendrite's key: %+v %v", c, err)
	}
	h.do(t, "POST", v3+"/keys/upload", hank.AccessToken, map[string]any{
		"one_time_keys": map[string]any{"signed_curve25519:HHHH": map[string]any{"key": "hank-key"}},
	}).expect(t, 200)
	c, err = dave.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{hank.UserID: {hank.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
	if err != nil || len(c.OneTimeKeys[hank.UserID][hank.DeviceID]) != 1 {
		t.Fatalf("Dendrite claims Haven's key: %+v %v", c, err)
	}
}
