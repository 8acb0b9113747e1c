//go:build goolm

package sytest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// These tests need the goolm build tag (scripts/test.sh sets it): mautrix-go
// then uses goolm, its pure-Go Olm and Megolm, instead of libolm through cgo.

// TestOlmMachine: two mautrix-go clients with their own Olm machines — what
// a bot or bridge built on mautrix runs — in an encrypted room on one
// server, each decrypting the other's messages.
func TestOlmMachine(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		olmConversation(t, s, s, "")
	})
}

// TestOlmMachineAcrossSites: the same across two federating sites (the
// first on SQLite, the second on PostgreSQL): alice's room on site A, bob
// on site B. Device keys (/keys/query), one-time keys (/keys/claim) and
// the room keys (to-device) cross the servers.
func TestOlmMachineAcrossSites(t *testing.T) {
	a, b := startSites(t)
	olmConversation(t, a.server, b.server, a.name)
}

// olmConversation: alice (on sa) creates an encrypted room and invites bob
// (on sb, joining through via when it is another site); each client learns
// the other's device keys, and each decrypts the other's message.
func olmConversation(t *testing.T, sa, sb *server, via string) {
	ctx := context.Background()
	alice := newOlmClient(t, sa.register(t, "alice"))
	bob := newOlmClient(t, sb.register(t, "bob"))

	room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Invite: []id.UserID{bob.cli.UserID},
		InitialState: []*event.Event{{Type: event.StateEncryption, StateKey: new(string),
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "bob's invite", func() bool { return bob.state.IsInvited(ctx, room.RoomID, bob.cli.UserID) })
	req := &mautrix.ReqJoinRoom{}
	if via != "" {
		req.Via = []string{via}
	}
	if _, err := bob.cli.JoinRoom(ctx, room.RoomID.String(), req); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	for _, c := range []*olmClient{alice, bob} {
		waitUntil(t, fmt.Sprintf("%s to see bob joined an encrypted room", c.cli.UserID), func() bool {
			enc, _ := c.state.IsEncrypted(ctx, room.RoomID)
			return enc && c.state.IsInRoom(ctx, room.RoomID, bob.cli.UserID)
		})
	}

	// Each machine learns the other's device, with the keys it uploaded.
	alice.wantDevice(t, bob)
	bob.wantDevice(t, alice)

	fromA := alice.send(t, room.RoomID, "alice's secret")
	bob.wantDecrypted(t, fromA, alice, "alice's secret")
	fromB := bob.send(t, room.RoomID, "bob's answer")
	alice.wantDecrypted(t, fromB, bob, "bob's answer")
	// The next message of the same session.
	again := alice.send(t, room.RoomID, "alice again")
	bob.wantDecrypted(t, again, alice, "alice again")
}

// olmClient is a mautrix-go client with its Olm machine (in-memory stores),
// syncing in the background: its to-device events, device list changes
// and one-time key counts go to the machine, its room state to the state
// store, and its encrypted room events are kept for the test to decrypt.
type olmClient struct {
	cli   *mautrix.Client
	mach  *crypto.OlmMachine
	state mautrix.StateStore

	mu        sync.Mutex
	encrypted map[id.EventID]*event.Event
	syncErr   error
}

func newOlmClient(t *testing.T, cli *mautrix.Client) *olmClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	state := mautrix.NewMemoryStateStore()
	cli.StateStore = state
	c := &olmClient{cli: cli, state: state, encrypted: map[id.EventID]*event.Event{}}
	c.mach = crypto.NewOlmMachine(cli, nil, crypto.NewMemoryStore(nil), state.(crypto.StateStore))
	if err := c.mach.Load(ctx); err != nil {
		t.Fatal(err)
	}
	// Device keys and one-time keys, as at a first login.
	if err := c.mach.ShareKeys(ctx, -1); err != nil {
		t.Fatalf("%s uploads its keys: %v", cli.UserID, err)
	}
	syncer := cli.Syncer.(*mautrix.DefaultSyncer)
	syncer.OnSync(c.mach.ProcessSyncResponse)
	syncer.OnEvent(cli.StateStoreSyncHandler)
	syncer.OnEventType(event.StateMember, c.mach.HandleMemberEvent)
	syncer.OnEventType(event.EventEncrypted, func(_ context.Context, evt *event.Event) {
		c.mu.Lock()
		c.encrypted[evt.ID] = evt
		c.mu.Unlock()
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := cli.SyncWithContext(ctx); err != nil && ctx.Err() == nil {
			c.mu.Lock()
			c.syncErr = err
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		c.mach.Destroy()
	})
	return c
}

// wantDevice: c's machine knows other's device, with the identity and
// signing keys other's machine uploaded (/keys/query, across servers when
// they differ).
func (c *olmClient) wantDevice(t *testing.T, other *olmClient) {
	t.Helper()
	ctx := context.Background()
	devices, err := c.mach.FetchKeys(ctx, []id.UserID{other.cli.UserID}, true)
	if err != nil {
		t.Errorf("%s fetches the keys of %s: %v", c.cli.UserID, other.cli.UserID, err)
		return
	}
	dev := devices[other.cli.UserID][other.cli.DeviceID]
	own := other.mach.OwnIdentity()
	if dev == nil {
		t.Errorf("%s does not get the device %s of %s: %v", c.cli.UserID, other.cli.DeviceID, other.cli.UserID, devices)
		return
	}
	if dev.SigningKey != own.SigningKey || dev.IdentityKey != own.IdentityKey {
		t.Errorf("%s gets the keys %s/%s for %s's device, which has %s/%s", c.cli.UserID, dev.SigningKey, dev.IdentityKey, other.cli.UserID, own.SigningKey, own.IdentityKey)
	}
}

// send encrypts a text message for the room's members (sharing a new
// Megolm session with their devices when needed: /keys/query, /keys/claim
// and /sendToDevice) and sends it.
func (c *olmClient) send(t *testing.T, room id.RoomID, body string) id.EventID {
	t.Helper()
	ctx := context.Background()
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: body}
	enc, err := c.mach.EncryptMegolmEvent(ctx, room, event.EventMessage, content)
	if errors.Is(err, crypto.ErrNoGroupSession) || errors.Is(err, crypto.ErrSessionExpired) || errors.Is(err, crypto.ErrSessionNotShared) {
		members, merr := c.state.GetRoomJoinedOrInvitedMembers(ctx, room)
		if merr != nil {
			t.Fatal(merr)
		}
		if err := c.mach.ShareGroupSession(ctx, room, members); err != nil {
			t.Fatalf("%s shares a room key with %v: %v", c.cli.UserID, members, err)
		}
		enc, err = c.mach.EncryptMegolmEvent(ctx, room, event.EventMessage, content)
	}
	if err != nil {
		t.Fatalf("%s encrypts %q: %v", c.cli.UserID, body, err)
	}
	resp, err := c.cli.SendMessageEvent(ctx, room, event.EventEncrypted, enc)
	if err != nil {
		t.Fatalf("%s sends %q: %v", c.cli.UserID, body, err)
	}
	return resp.EventID
}

// wantDecrypted: the event reaches c and c's machine decrypts it to body,
// from a device of sender that it knows (its keys match the session's).
func (c *olmClient) wantDecrypted(t *testing.T, eventID id.EventID, sender *olmClient, body string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	var lastErr error
	for {
		c.mu.Lock()
		evt, syncErr := c.encrypted[eventID], c.syncErr
		c.mu.Unlock()
		if syncErr != nil {
			t.Fatalf("sync of %s failed: %v", c.cli.UserID, syncErr)
		}
		if evt != nil {
			dec, err := c.mach.DecryptMegolmEvent(ctx, evt)
			if err == nil {
				msg := dec.Content.AsMessage()
				if dec.Type != event.EventMessage || msg.Body != body {
					t.Errorf("%s decrypts %s to a %s with body %q, want %q", c.cli.UserID, eventID, dec.Type.Type, msg.Body, body)
				}
				if src := dec.Mautrix.TrustSource; src == nil || src.UserID != sender.cli.UserID || src.DeviceID != sender.cli.DeviceID {
					t.Errorf("%s decrypts %q from an unknown device (trust %s, source %+v)", c.cli.UserID, body, dec.Mautrix.TrustState, src)
				}
				return
			}
			lastErr = err
		}
		if time.Now().After(deadline) {
			if evt == nil {
				t.Errorf("%s never got the event %s (%q)", c.cli.UserID, eventID, body)
			} else {
				t.Errorf("%s cannot decrypt %q from %s: %v", c.cli.UserID, body, sender.cli.UserID, lastErr)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
