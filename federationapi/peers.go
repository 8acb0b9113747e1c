package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/federationapi/client"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/roomserver"
)

// Peers is the roomserver's way to other servers: it implements
// roomserver.Federation (invites, joins, knocks and leaves across servers, remote
// aliases) and roomserver.EventFetcher (filling gaps in a room's DAG) over
// the signed federation client, and verifies what the other servers answer.
type Peers struct {
	fed        fclient.FederationClient
	verifier   gomatrixserverlib.JSONVerifier
	serverName spec.ServerName
	key        serverkey.Key
	log        *logrus.Logger
}

// NewPeers makes the way to other servers.
func NewPeers(fed fclient.FederationClient, verifier gomatrixserverlib.JSONVerifier, serverName string, key serverkey.Key, log *logrus.Logger) *Peers {
	return &Peers{fed: fed, verifier: verifier, serverName: spec.ServerName(serverName), key: key, log: log}
}

var (
	_ roomserver.Federation   = (*Peers)(nil)
	_ roomserver.EventFetcher = (*Peers)(nil)
)

// How long one call to another server may take.
const peerTimeout = 30 * time.Second

func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// remoteError turns another server's answer into the error the client
// sees: its Matrix error where it gave one (403, 404 ...), otherwise 502.
func remoteError(server string, err error) error {
	var he gomatrix.HTTPError
	if errors.As(err, &he) {
		var body struct {
			Errcode string `json:"errcode"`
			Error   string `json:"error"`
		}
		if json.Unmarshal(he.Contents, &body) == nil && body.Errcode != "" && he.Code >= 400 && he.Code < 500 {
			return merr.Custom(he.Code, body.Errcode, "%s: %s", server, body.Error)
		}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, client.ErrNotAllowed) || errors.Is(err, client.ErrPrivateAddress) {
		return merr.Forbidden("Federation with %s is not allowed on this server", server)
	}
	return merr.BadGateway("Could not reach %s: %v", server, err)
}

// Invite asks the invitee's server to sign an invite of its user.
func (p *Peers) Invite(ctx context.Context, invite gomatrixserverlib.PDU, stripped []json.RawMessage) (gomatrixserverlib.PDU, error) {
	target := invite.StateKey()
	if target == nil {
		return nil, merr.BadJSON("An invite needs a state_key")
	}
	uid, err := spec.NewUserID(*target, true)
	if err != nil {
		return nil, merr.InvalidParam("Invalid user ID %q", *target)
	}
	var state []gomatrixserverlib.InviteStrippedState
	for _, raw := range stripped {
		var s gomatrixserverlib.InviteStrippedState
		if err := json.Unmarshal(raw, &s); err == nil {
			state = append(state, s)
		}
	}
	req, err := fclient.NewInviteV2Request(invite, state)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	dest := uid.Domain()
	resp, err := p.fed.SendInviteV2(ctx, p.serverName, dest, req)
	if err != nil {
		return nil, remoteError(string(dest), err)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(invite.Version())
	if err != nil {
		return nil, err
	}
	signed, err := verImpl.NewEventFromUntrustedJSON(resp.Event)
	if err != nil {
		return nil, merr.BadGateway("%s answered an unusable invite: %v", dest, err)
	}
	if signed.EventID() != invite.EventID() {
		return nil, merr.BadGateway("%s changed the invite", dest)
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, p.verifier, userIDForSender); err != nil {
		return nil, merr.BadGateway("%s signed the invite wrongly: %v", dest, err)
	}
	return signed, nil
}

// Join makes a local user join a room through the first of servers that
// lets them: make_join for a template, the join built and signed here,
// send_join, and the room's state and auth chain checked (signatures, the
// auth rules of each event against its auth events, the join against
// that state).
func (p *Peers) Join(ctx context.Context, userID, roomID string, servers []string, content map[string]any) (*roomserver.RemoteJoin, error) {
	var last error
	for _, srv := range servers {
		rj, err := p.joinVia(ctx, userID, roomID, spec.ServerName(srv), content)
		if err == nil {
			return rj, nil
		}
		p.log.WithFields(logrus.Fields{"room_id": roomID, "user_id": userID, "server": srv}).WithError(err).Info("Join through another server failed")
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	if last == nil {
		last = merr.NotFound("No server to join %s through", roomID)
	}
	return nil, last
}

func (p *Peers) joinVia(ctx context.Context, userID, roomID string, srv spec.ServerName, content map[string]any) (*roomserver.RemoteJoin, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*peerTimeout)
	defer cancel()
	made, err := p.fed.MakeJoin(ctx, p.serverName, srv, roomID, userID)
	if err != nil {
		return nil, remoteError(string(srv), err)
	}
	ver := made.RoomVersion
	if ver == "" {
		ver = gomatrixserverlib.RoomVersionV1
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil || ver == gomatrixserverlib.RoomVersionPseudoIDs {
		return nil, merr.Custom(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "Room version %s is not supported here", ver)
	}
	join, err := p.buildMembership(verImpl, made.JoinEvent, roomID, userID, spec.Join, content)
	if err != nil {
		return nil, err
	}
	resp, err := p.fed.SendJoin(ctx, p.serverName, srv, join)
	if err != nil {
		return nil, remoteError(string(srv), err)
	}
	// The resident server may have countersigned the join (restricted rooms).
	if len(resp.Event) > 0 {
		if ev, err := verImpl.NewEventFromUntrustedJSON(resp.Event); err == nil && ev.EventID() == join.EventID() {
			join = ev
		}
	}
	state, err := gomatrixserverlib.CheckSendJoinResponse(ctx, ver, gomatrixserverlib.StateResponse(&resp), p.verifier, join,
		p.missingAuth(ctx, srv, roomID), userIDForSender)
	if err != nil {
		return nil, merr.BadGateway("%s answered an unusable room state: %v", srv, err)
	}
	return &roomserver.RemoteJoin{Event: join, State: state.GetStateEvents().TrustedEvents(ver, false),
		AuthChain: state.GetAuthEvents().TrustedEvents(ver, false)}, nil
}

// buildMembership fills a make_join/make_leave template in and signs it.
func (p *Peers) buildMembership(verImpl gomatrixserverlib.IRoomVersion, proto gomatrixserverlib.ProtoEvent, roomID, userID, membership string, content map[string]any) (gomatrixserverlib.PDU, error) {
	if proto.RoomID != roomID || proto.SenderID != userID || proto.StateKey == nil || *proto.StateKey != userID {
		return nil, merr.BadGateway("The template for %s is for another room or user", roomID)
	}
	proto.Type = spec.MRoomMember
	proto.Redacts = ""
	c := map[string]any{}
	for k, v := range content {
		c[k] = v
	}
	// The resident server's template may carry fields of its own (the
	// authorising user of a restricted join): keep them.
	var tmpl map[string]any
	if json.Unmarshal(proto.Content, &tmpl) == nil {
		for k, v := range tmpl {
			if _, ok := c[k]; !ok {
				c[k] = v
			}
		}
	}
	c["membership"] = membership
	b := verImpl.NewEventBuilderFromProtoEvent(&proto)
	if err := b.SetContent(c); err != nil {
		return nil, err
	}
	if err := b.SetUnsigned(struct{}{}); err != nil {
		return nil, err
	}
	ev, err := b.Build(time.Now(), p.serverName, p.key.ID, p.key.Private)
	if err != nil {
		return nil, merr.BadGateway("The template for %s is unusable: %v", roomID, err)
	}
	return ev, nil
}

// missingAuth fetches auth events a send_join answer left out, one by one.
func (p *Peers) missingAuth(ctx context.Context, srv spec.ServerName, roomID string) gomatrixserverlib.EventProvider {
	return func(ver gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
		var out []gomatrixserverlib.PDU
		for _, id := range ids {
			ev, err := p.Event(ctx, string(srv), ver, id)
			if err != nil {
				return nil, err
			}
			if ev.RoomID().String() != roomID {
				return nil, fmt.Errorf("auth event %s is in another room", id)
			}
			out = append(out, ev)
		}
		return out, nil
	}
}

// Leave makes a local user leave (or reject an invite to) a room this
// server is not in, through the first of servers that answers.
func (p *Peers) Leave(ctx context.Context, userID, roomID string, servers []string) (gomatrixserverlib.PDU, error) {
	var last error
	for _, s := range servers {
		srv := spec.ServerName(s)
		ev, err := func() (gomatrixserverlib.PDU, error) {
			ctx, cancel := context.WithTimeout(ctx, peerTimeout)
			defer cancel()
			made, err := p.fed.MakeLeave(ctx, p.serverName, srv, roomID, userID)
			if err != nil {
				return nil, remoteError(s, err)
			}
			verImpl, err := gomatrixserverlib.GetRoomVersion(made.RoomVersion)
			if err != nil {
				return nil, merr.Custom(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "Room version %s is not supported here", made.RoomVersion)
			}
			ev, err := p.buildMembership(verImpl, made.LeaveEvent, roomID, userID, spec.Leave, nil)
			if err != nil {
				return nil, err
			}
			if err := p.fed.SendLeave(ctx, p.serverName, srv, ev); err != nil {
				return nil, remoteError(s, err)
			}
			return ev, nil
		}()
		if err == nil {
			return ev, nil
		}
		last = err
	}
	return nil, last
}

// Knock knocks a local user on a room this server is not in, through the
// first of servers that lets them: make_knock for a template (offering the
// room versions that know knocking), the knock built and signed here,
// send_knock, and the room's stripped state that server answers, kept
// where it is sane.
func (p *Peers) Knock(ctx context.Context, userID, roomID string, servers []string, content map[string]any) (gomatrixserverlib.PDU, []json.RawMessage, error) {
	var last error
	for _, s := range servers {
		ev, stripped, err := p.knockVia(ctx, userID, roomID, spec.ServerName(s), content)
		if err == nil {
			return ev, stripped, nil
		}
		p.log.WithFields(logrus.Fields{"room_id": roomID, "user_id": userID, "server": s}).WithError(err).Info("Knock through another server failed")
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	if last == nil {
		last = merr.NotFound("No server to knock on %s through", roomID)
	}
	return nil, nil, last
}

// knockVersions are the room versions whose auth rules know knocking.
func knockVersions() []gomatrixserverlib.RoomVersion {
	var out []gomatrixserverlib.RoomVersion
	for v, impl := range gomatrixserverlib.RoomVersions() {
		if v != gomatrixserverlib.RoomVersionPseudoIDs && impl.CheckKnockingAllowed(string(v), "@k:x", "@k:x", spec.Knock, spec.Leave) == nil {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (p *Peers) knockVia(ctx context.Context, userID, roomID string, srv spec.ServerName, content map[string]any) (gomatrixserverlib.PDU, []json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	versions := knockVersions()
	made, err := p.fed.MakeKnock(ctx, p.serverName, srv, roomID, userID, versions)
	if err != nil {
		return nil, nil, remoteError(string(srv), err)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(made.RoomVersion)
	if err != nil || !slices.Contains(versions, made.RoomVersion) {
		return nil, nil, merr.Custom(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "Room version %s does not allow knocking here", made.RoomVersion)
	}
	ev, err := p.buildMembership(verImpl, made.KnockEvent, roomID, userID, spec.Knock, content)
	if err != nil {
		return nil, nil, err
	}
	resp, err := p.fed.SendKnock(ctx, p.serverName, srv, ev)
	if err != nil {
		return nil, nil, remoteError(string(srv), err)
	}
	return ev, saneStrippedState(resp.KnockRoomState), nil
}

// Limits of a stripped state kept from another server.
const (
	maxStrippedEvents = 50
	maxStrippedBytes  = 64 << 10
)

// saneStrippedState keeps the stripped state events of another server's
// answer that a client can use: a type, a string state_key, a sender that
// is a user ID and an object for content, within limits on their number
// and size. Never nil.
func saneStrippedState(in []gomatrixserverlib.InviteStrippedState) []json.RawMessage {
	out := []json.RawMessage{}
	size := 0
	for _, st := range in {
		if len(out) == maxStrippedEvents {
			break
		}
		var obj map[string]json.RawMessage
		if st.Type() == "" || st.StateKey() == nil || json.Unmarshal(st.Content(), &obj) != nil || obj == nil {
			continue
		}
		if _, err := spec.NewUserID(st.Sender(), true); err != nil {
			continue
		}
		b, err := json.Marshal(st)
		if err != nil || size+len(b) > maxStrippedBytes {
			continue
		}
		size += len(b)
		out = append(out, b)
	}
	return out
}

// QueryAlias asks an alias's server which room it names.
func (p *Peers) QueryAlias(ctx context.Context, alias string) (string, []string, error) {
	_, server, ok := cutServer(alias)
	if !ok {
		return "", nil, merr.InvalidParam("Invalid room alias %q", alias)
	}
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	resp, err := p.fed.LookupRoomAlias(ctx, p.serverName, spec.ServerName(server), alias)
	if err != nil {
		return "", nil, remoteError(server, err)
	}
	servers := make([]string, 0, len(resp.Servers)+1)
	for _, s := range resp.Servers {
		servers = append(servers, string(s))
	}
	return resp.RoomID, append(servers, server), nil
}

func cutServer(id string) (local, server string, ok bool) {
	for i := 0; i < len(id); i++ {
		if id[i] == ':' {
			return id[:i], id[i+1:], i > 1 && i+1 < len(id)
		}
	}
	return "", "", false
}

// MissingEvents asks origin for the events between what this server has
// and latest (/get_missing_events), each checked for its signatures.
func (p *Peers) MissingEvents(ctx context.Context, origin, roomID string, ver gomatrixserverlib.RoomVersion, earliest, latest []string, limit int) ([]gomatrixserverlib.PDU, error) {
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	resp, err := p.fed.LookupMissingEvents(ctx, p.serverName, spec.ServerName(origin), roomID,
		fclient.MissingEvents{Limit: limit, EarliestEvents: earliest, LatestEvents: latest}, ver)
	if err != nil {
		return nil, remoteError(origin, err)
	}
	var out []gomatrixserverlib.PDU
	for _, ev := range resp.Events.UntrustedEvents(ver) {
		if ev.RoomID().String() != roomID {
			continue
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, p.verifier, userIDForSender); err != nil {
			continue
		}
		out = append(out, ev)
	}
	return out, nil
}

// StateIDs asks origin for the state before an event and its auth chain.
func (p *Peers) StateIDs(ctx context.Context, origin, roomID, eventID string) ([]string, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	resp, err := p.fed.LookupStateIDs(ctx, p.serverName, spec.ServerName(origin), roomID, eventID)
	if err != nil {
		return nil, nil, remoteError(origin, err)
	}
	return resp.StateEventIDs, resp.AuthEventIDs, nil
}

// Event asks origin for one event of a room of the given version, checked
// for its hashes and signatures.
func (p *Peers) Event(ctx context.Context, origin string, ver gomatrixserverlib.RoomVersion, eventID string) (gomatrixserverlib.PDU, error) {
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	txn, err := p.fed.GetEvent(ctx, p.serverName, spec.ServerName(origin), eventID)
	if err != nil {
		return nil, remoteError(origin, err)
	}
	if len(txn.PDUs) != 1 {
		return nil, fmt.Errorf("%s answered %d events for %s", origin, len(txn.PDUs), eventID)
	}
	return p.parseEvent(ctx, origin, eventID, ver, txn.PDUs[0])
}

// parseEvent checks a fetched event: its ID, its hashes and signatures.
func (p *Peers) parseEvent(ctx context.Context, origin, eventID string, ver gomatrixserverlib.RoomVersion, raw []byte) (gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	ev, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("event %s from %s: %w", eventID, origin, err)
	}
	if ev.EventID() != eventID {
		return nil, fmt.Errorf("%s answered another event for %s", origin, eventID)
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, p.verifier, userIDForSender); err != nil {
		return nil, fmt.Errorf("event %s from %s: %w", eventID, origin, err)
	}
	return ev, nil
}

// RemoteProfile asks a user's server for their profile.
func (p *Peers) RemoteProfile(ctx context.Context, userID string) (string, string, error) {
	_, server, ok := cutServer(userID)
	if !ok {
		return "", "", merr.InvalidParam("Invalid user ID %q", userID)
	}
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	resp, err := p.fed.LookupProfile(ctx, p.serverName, spec.ServerName(server), userID, "")
	if err != nil {
		return "", "", remoteError(server, err)
	}
	return resp.DisplayName, resp.AvatarURL, nil
}

// Backfill asks origin for the events before from, each checked for its
// hashes and signatures (the others are left out).
func (p *Peers) Backfill(ctx context.Context, origin, roomID string, ver gomatrixserverlib.RoomVersion, from []string, limit int) ([]gomatrixserverlib.PDU, error) {
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	txn, err := p.fed.Backfill(ctx, p.serverName, spec.ServerName(origin), roomID, limit, from)
	if err != nil {
		return nil, remoteError(origin, err)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	var out []gomatrixserverlib.PDU
	for _, raw := range txn.PDUs {
		ev, err := verImpl.NewEventFromUntrustedJSON(raw)
		if err != nil || ev.RoomID().String() != roomID {
			continue
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, p.verifier, userIDForSender); err != nil {
			continue
		}
		out = append(out, ev)
	}
	return out, nil
}

// signedJSON makes a signed request to server through the federation
// client (allowlist, discovery, TLS) and decodes its JSON answer as the
// other server wrote it (no fclient type in between).
func (p *Peers) signedJSON(ctx context.Context, method, server, path string, body, out any) error {
	req := fclient.NewFederationRequest(method, p.serverName, spec.ServerName(server), path)
	if body != nil {
		if err := req.SetContent(body); err != nil {
			return err
		}
	}
	if err := req.Sign(p.serverName, p.key.ID, p.key.Private); err != nil {
		return err
	}
	hr, err := req.HTTPRequest()
	if err != nil {
		return err
	}
	return p.fed.DoRequestAndParseResponse(ctx, hr, out)
}
