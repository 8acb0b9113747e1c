package roomserver

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

var nowTime = time.Now

// StateInit is one event of initial_state.
type StateInit struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRoomRequest is the body of POST /createRoom.
type CreateRoomRequest struct {
	Visibility                string                     `json:"visibility"`
	RoomAliasName             string                     `json:"room_alias_name"`
	Name                      *string                    `json:"name"`
	Topic                     *string                    `json:"topic"`
	Invite                    []string                   `json:"invite"`
	RoomVersion               string                     `json:"room_version"`
	CreationContent           map[string]json.RawMessage `json:"creation_content"`
	InitialState              []StateInit                `json:"initial_state"`
	Preset                    string                     `json:"preset"`
	IsDirect                  bool                       `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage            `json:"power_level_content_override"`
}

// CreateRoomResult is what /createRoom answers.
type CreateRoomResult struct {
	RoomID    string `json:"room_id"`
	RoomAlias string `json:"room_alias,omitempty"`
}

func randomString(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

func mustJSON(v any) spec.RawJSON {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called with values that always marshal
	}
	return b
}

// ValidUserID reports whether s is a syntactically valid user ID (its
// server name may have a port).
func ValidUserID(s string) bool { return ids.ValidUserID(s) }

// CreateRoom creates a room with all its initial events in one transaction.
func (s *Service) CreateRoom(ctx context.Context, sender string, req CreateRoomRequest) (CreateRoomResult, error) {
	version := req.RoomVersion
	if version == "" {
		version = s.opts.DefaultVersion
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil || !gomatrixserverlib.StableRoomVersion(gomatrixserverlib.RoomVersion(version)) {
		return CreateRoomResult{}, merr.UnsupportedRoomVersion("Room version %q is not supported", version)
	}
	preset := req.Preset
	switch preset {
	case "":
		preset = "private_chat"
		if req.Visibility == "public" {
			preset = "public_chat"
		}
	case "private_chat", "trusted_private_chat", "public_chat":
	default:
		return CreateRoomResult{}, merr.BadJSON("Unknown preset %q", req.Preset)
	}
	if req.Visibility != "" && req.Visibility != "public" && req.Visibility != "private" {
		return CreateRoomResult{}, merr.BadJSON("visibility must be public or private")
	}
	alias := ""
	if req.RoomAliasName != "" {
		if !ids.ValidAliasLocalpart(req.RoomAliasName) {
			return CreateRoomResult{}, merr.InvalidParam("room_alias_name may not contain ':', '#' or whitespace")
		}
		alias = "#" + req.RoomAliasName + ":" + s.opts.ServerName
		if len(alias) > 255 {
			return CreateRoomResult{}, merr.InvalidParam("room_alias_name is too long")
		}
		if err := s.mayCreateAlias(sender, alias); err != nil {
			return CreateRoomResult{}, err
		}
		if _, err := s.resolveLocal(ctx, alias); err == nil {
			return CreateRoomResult{}, merr.RoomInUse("Room alias %s already taken", alias)
		}
	}
	seen := map[string]bool{}
	for _, u := range req.Invite {
		if !ValidUserID(u) {
			return CreateRoomResult{}, merr.InvalidParam("Invalid user ID to invite: %q", u)
		}
		if u == sender || seen[u] {
			continue
		}
		seen[u] = true
	}
	if len(req.Invite) > 100 {
		return CreateRoomResult{}, merr.InvalidParam("At most 100 users can be invited at creation")
	}
	if len(req.InitialState) > 100 {
		return CreateRoomResult{}, merr.InvalidParam("At most 100 initial_state events")
	}
	var invites []string
	for _, u := range req.Invite {
		if u != sender && seen[u] {
			invites = append(invites, u)
			seen[u] = false
		}
	}
	if err := s.checkInvitees(ctx, invites); err != nil {
		return CreateRoomResult{}, err
	}

	// 1. m.room.create
	createContent := map[string]json.RawMessage{}
	for k, v := range req.CreationContent {
		createContent[k] = v
	}
	createContent["room_version"] = json.RawMessage(mustJSON(version))
	delete(createContent, "creator")
	if !versionDropsCreator(verImpl) {
		createContent["creator"] = json.RawMessage(mustJSON(sender))
	}
	if verImpl.PrivilegedCreators() && preset == "trusted_private_chat" && len(invites) > 0 {
		createContent["additional_creators"] = json.RawMessage(mustJSON(invites))
	}
	r := &room{version: verImpl, state: map[stateKey]gomatrixserverlib.PDU{}}
	if !verImpl.DomainlessRoomIDs() {
		r.id = "!" + randomString(18) + ":" + s.opts.ServerName
	}
	d := newDraft(r)
	empty := ""
	createPDU, err := s.add(d, &gomatrixserverlib.ProtoEvent{SenderID: sender, Type: spec.MRoomCreate, StateKey: &empty, Content: mustJSON(createContent)}, eventMeta{})
	if err != nil {
		return CreateRoomResult{}, err
	}
	if verImpl.DomainlessRoomIDs() {
		r.id = createPDU.RoomID().String()
	}
	unlock := sync.OnceFunc(s.locks.Lock(r.id))
	defer unlock()

	// 2. the creator joins
	if _, err := s.addMember(ctx, d, sender, sender, spec.Join, nil, nil); err != nil {
		return CreateRoomResult{}, err
	}
	// 3. power levels
	pl := defaultPowerLevels(sender, preset, invites, verImpl)
	plJSON := mustJSON(pl)
	if len(req.PowerLevelContentOverride) > 0 && string(req.PowerLevelContentOverride) != "null" {
		var override map[string]json.RawMessage
		if err := json.Unmarshal(req.PowerLevelContentOverride, &override); err != nil {
			return CreateRoomResult{}, merr.BadJSON("power_level_content_override must be an object")
		}
		var merged map[string]json.RawMessage
		_ = json.Unmarshal(plJSON, &merged)
		for k, v := range override {
			merged[k] = v
		}
		plJSON = mustJSON(merged)
	}
	if _, err := s.add(d, &gomatrixserverlib.ProtoEvent{SenderID: sender, Type: spec.MRoomPowerLevels, StateKey: &empty, Content: plJSON}, eventMeta{}); err != nil {
		return CreateRoomResult{}, err
	}
	addState := func(typ, key string, content spec.RawJSON) error {
		k := key
		_, err := s.add(d, &gomatrixserverlib.ProtoEvent{SenderID: sender, Type: typ, StateKey: &k, Content: content}, eventMeta{})
		return err
	}
	// 4. canonical alias
	if alias != "" {
		if err := addState(spec.MRoomCanonicalAlias, "", mustJSON(map[string]string{"alias": alias})); err != nil {
			return CreateRoomResult{}, err
		}
	}
	// 5. preset
	joinRule, guest := "invite", "can_join"
	if preset == "public_chat" {
		joinRule, guest = "public", "forbidden"
	}
	initial := map[stateKey]bool{}
	for _, st := range req.InitialState {
		initial[stateKey{st.Type, st.StateKey}] = true
	}
	for _, ev := range []struct {
		typ     string
		content any
	}{
		{spec.MRoomJoinRules, map[string]string{"join_rule": joinRule}},
		{spec.MRoomHistoryVisibility, map[string]string{"history_visibility": "shared"}},
		{"m.room.guest_access", map[string]string{"guest_access": guest}},
	} {
		if initial[stateKey{ev.typ, ""}] {
			continue // initial_state sets it
		}
		if err := addState(ev.typ, "", mustJSON(ev.content)); err != nil {
			return CreateRoomResult{}, err
		}
	}
	// 6. initial_state
	for _, st := range req.InitialState {
		if st.Type == "" {
			return CreateRoomResult{}, merr.BadJSON("initial_state events need a type")
		}
		if st.Type == spec.MRoomCreate || st.Type == spec.MRoomMember {
			return CreateRoomResult{}, merr.BadJSON("initial_state may not contain %s events", st.Type)
		}
		content := st.Content
		if len(content) == 0 || content[0] != '{' {
			return CreateRoomResult{}, merr.BadJSON("initial_state content must be an object")
		}
		if err := addState(st.Type, st.StateKey, spec.RawJSON(content)); err != nil {
			return CreateRoomResult{}, err
		}
	}
	// 7, 8. name and topic
	if req.Name != nil && *req.Name != "" {
		if len(*req.Name) > 255 {
			return CreateRoomResult{}, merr.TooLarge("Room name is longer than 255 bytes")
		}
		if err := addState(spec.MRoomName, "", mustJSON(map[string]string{"name": *req.Name})); err != nil {
			return CreateRoomResult{}, err
		}
	}
	if req.Topic != nil && *req.Topic != "" {
		if err := addState(spec.MRoomTopic, "", mustJSON(newTopicContent(*req.Topic))); err != nil {
			return CreateRoomResult{}, err
		}
	}
	// 9. invites: this server's users in the batch; other servers' users
	// once the room exists, each signed by the invitee's server first.
	var remoteInvites []string
	for _, u := range invites {
		if !s.IsLocal(u) {
			remoteInvites = append(remoteInvites, u)
			continue
		}
		if _, err := s.addMember(ctx, d, sender, u, spec.Invite, reasonFields("", req.IsDirect), nil); err != nil {
			return CreateRoomResult{}, err
		}
	}
	published := req.Visibility == "public"
	extra := func(ctx context.Context, tx *storage.Tx) error {
		if alias != "" {
			if _, err := tx.Exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1,$2,$3)`, alias, r.id, sender); err != nil {
				if storage.IsUniqueViolation(err) {
					return merr.RoomInUse("Room alias %s already taken", alias)
				}
				return fmt.Errorf("insert alias %s: %w", alias, err)
			}
		}
		if published {
			if _, err := tx.Exec(ctx, `UPDATE rooms SET published = $1 WHERE room_id = $2`, true, r.id); err != nil {
				return fmt.Errorf("publish room %s: %w", r.id, err)
			}
		}
		return nil
	}
	if _, err := s.commit(ctx, d, &roomRow{version: version}, extra); err != nil {
		return CreateRoomResult{}, err
	}
	unlock()
	for _, u := range remoteInvites {
		// The room stands even if a server cannot be reached: the invite
		// can be sent again.
		if _, err := s.invite(ctx, sender, r.id, u, reasonFields("", req.IsDirect)); err != nil {
			logging.From(ctx).WithError(err).WithFields(map[string]any{"room_id": r.id, "user_id": u}).Warn("Invite at room creation not delivered")
		}
	}
	return CreateRoomResult{RoomID: r.id, RoomAlias: alias}, nil
}

// versionDropsCreator: from v11 the create event has no creator field.
func versionDropsCreator(v gomatrixserverlib.IRoomVersion) bool {
	switch v.Version() {
	case "1", "2", "3", "4", "5", "6", "7", "8", "9", "10":
		return false
	}
	return true
}

func defaultPowerLevels(creator, preset string, invites []string, v gomatrixserverlib.IRoomVersion) map[string]any {
	users := map[string]int64{}
	if !v.PrivilegedCreators() {
		users[creator] = 100
		if preset == "trusted_private_chat" {
			for _, u := range invites {
				users[u] = 100
			}
		}
	}
	return map[string]any{
		"users":          users,
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         0,
		"events": map[string]int64{
			"m.room.name":               50,
			"m.room.power_levels":       100,
			"m.room.history_visibility": 100,
			"m.room.canonical_alias":    50,
			"m.room.avatar":             50,
			"m.room.tombstone":          100,
			"m.room.server_acl":         100,
			"m.room.encryption":         100,
		},
		"notifications": map[string]int64{"room": 50},
	}
}

func (s *Service) checkInvitees(ctx context.Context, users []string) error {
	for _, u := range users {
		if ids.ServerOf(u, '@') != s.opts.ServerName {
			if s.opts.Federation == nil {
				return merr.Forbidden("Cannot invite %s: federation with other servers is not enabled", u)
			}
			continue
		}
		if s.accounts == nil {
			continue
		}
		ok, err := s.accounts.AccountExists(ctx, u)
		if err != nil {
			return err
		}
		if !ok {
			return merr.NotFound("Unknown user %s", u)
		}
	}
	return nil
}
