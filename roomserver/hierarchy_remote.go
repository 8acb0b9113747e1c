package roomserver

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/internal/ids"
	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/merr"
)

// ServerHierarchy is a room's place in a space as servers tell each other
// (GET /_matrix/federation/v1/hierarchy/{roomId}): the room with its
// m.space.child events, the summaries of its direct children the asking
// server may see, and the IDs of the children known here that it may not.
type ServerHierarchy struct {
	Room                 HierarchyRoom   `json:"room"`
	Children             []HierarchyRoom `json:"children"`
	InaccessibleChildren []string        `json:"inaccessible_children"`
}

// SpaceFetcher asks another server about a room of a space (its
// federation /hierarchy); the federation API implements it. Errors are
// Matrix errors where the other server gave one.
type SpaceFetcher interface {
	RemoteHierarchy(ctx context.Context, server, roomID string, suggestedOnly bool) (*ServerHierarchy, error)
}

// Bounds of what the hierarchy takes from and gives to other servers.
const (
	// maxServerChildren bounds the children of one room summarized for
	// another server, and those taken from another server's answer.
	maxServerChildren = 200
	// maxRemoteFetches bounds the servers one /hierarchy page asks.
	maxRemoteFetches = 10
	// maxViaTried bounds the via servers tried for one room.
	maxViaTried = 3
	// remoteFetchTimeout bounds one question to another server.
	remoteFetchTimeout = 15 * time.Second
	// How long an answer (or a failure) of another server is kept.
	remoteSpaceTTL       = time.Minute
	remoteSpaceFailedTTL = 20 * time.Second
	// maxSummaryText bounds the texts of a summary from another server.
	maxSummaryText = 4096
)

// HierarchyForServer answers another server's GET /hierarchy/{roomId}: a
// room this server is in, with the direct children it knows. What origin
// may see: a world-readable room, a room anyone may join or knock on, a
// room where origin has a joined or invited user, and a restricted room
// when origin has a user joined to one of its allowed rooms (that server
// then checks its own user against allowed_room_ids). Everything else,
// and rooms whose server ACL refuses origin, is 404 M_NOT_FOUND, as an
// unknown room is.
func (s *Service) HierarchyForServer(ctx context.Context, roomID, origin string, suggestedOnly bool) (*ServerHierarchy, error) {
	if !storableRoomID(roomID) {
		return nil, merr.InvalidParam("Invalid room ID %q", roomID)
	}
	notFound := merr.NotFound("Room %s is unknown here or not visible to %s", roomID, origin)
	sum, err := s.summarize(ctx, roomID)
	if err != nil || sum == nil {
		return nil, firstErr(err, notFound)
	}
	in, err := s.localJoined(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if !in {
		return nil, notFound // what this server has of the room is stale
	}
	ok, err := s.accessibleToServer(ctx, sum, origin)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, notFound
	}
	out := &ServerHierarchy{Room: withChildren(sum, suggestedOnly), Children: []HierarchyRoom{}, InaccessibleChildren: []string{}}
	for i, c := range spaceChildren(sum, suggestedOnly) {
		if i == maxServerChildren {
			break
		}
		cs, err := s.summarize(ctx, c.roomID)
		if err != nil {
			return nil, err
		}
		if cs == nil {
			continue // not known here: the asking server asks another
		}
		ok, err := s.accessibleToServer(ctx, cs, origin)
		if err != nil {
			return nil, err
		}
		if !ok {
			out.InaccessibleChildren = append(out.InaccessibleChildren, c.roomID)
			continue
		}
		out.Children = append(out.Children, withChildren(cs, suggestedOnly))
	}
	return out, nil
}

func firstErr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

// spaceChildren are the children of a space the walk follows (all, or
// the suggested ones); none for a room that is not a space.
func spaceChildren(sum *roomSummary, suggestedOnly bool) []child {
	if sum.RoomType != "m.space" {
		return nil
	}
	var out []child
	for _, c := range sum.children {
		if !suggestedOnly || c.suggested {
			out = append(out, c)
		}
	}
	return out
}

// withChildren is a room's summary with the m.space.child events the walk
// follows.
func withChildren(sum *roomSummary, suggestedOnly bool) HierarchyRoom {
	room := sum.HierarchyRoom
	children := spaceChildren(sum, suggestedOnly)
	room.ChildrenState = make([]ChildState, 0, len(children))
	for _, c := range children {
		room.ChildrenState = append(room.ChildrenState, c.state)
	}
	return room
}

// accessibleToServer tells whether another server may see a room in a
// space's hierarchy (see HierarchyForServer).
func (s *Service) accessibleToServer(ctx context.Context, sum *roomSummary, origin string) (bool, error) {
	allowed, err := s.ServerAllowed(ctx, sum.RoomID, origin)
	if err != nil || !allowed {
		return false, err
	}
	if sum.WorldReadable {
		return true, nil
	}
	switch sum.JoinRule {
	case spec.Public, spec.Knock, spec.KnockRestricted:
		return true, nil
	}
	has, err := s.serverHasMember(ctx, sum.RoomID, origin, spec.Join, spec.Invite)
	if err != nil || has {
		return has, err
	}
	if sum.JoinRule == spec.Restricted {
		for _, id := range sum.allow {
			if !storableRoomID(id) {
				continue
			}
			if has, err := s.serverHasMember(ctx, id, origin, spec.Join); err != nil || has {
				return has, err
			}
		}
	}
	return false, nil
}

// serverHasMember tells whether a user of server has one of memberships
// in the room's current state.
func (s *Service) serverHasMember(ctx context.Context, roomID, server string, memberships ...string) (bool, error) {
	rows, err := s.db.Query(ctx, `SELECT state_key FROM room_state WHERE room_id = $1 AND type = 'm.room.member' AND membership IN ($2)`, roomID, memberships)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	for rows.Next() {
		var userID string
		if err := rows.Scan(&userID); err != nil {
			return false, err
		}
		if strings.EqualFold(ids.ServerOf(userID, '@'), server) {
			return true, nil
		}
	}
	return false, rows.Err()
}

// localJoined tells whether a user of this server is joined to the room:
// only then is its state here current.
func (s *Service) localJoined(ctx context.Context, roomID string) (bool, error) {
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM room_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'
AND state_key LIKE $2 ESCAPE '\' LIMIT 1`, roomID, "%:"+likeEscape(s.opts.ServerName)).Scan(&one)
	if isNoRows(err) {
		return false, nil
	}
	return err == nil, err
}

// likeEscape escapes the LIKE wildcards of s (the escape character is \).
func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// rootVia is where to ask about a space's root this server is not in:
// the server of its room ID (the room's creator's, in room versions up
// to 11).
func rootVia(roomID, self string) []string {
	if srv := ids.ServerOf(roomID, '!'); srv != "" && srv != self {
		return []string{srv}
	}
	return nil
}

// remoteSpace is another server's answer about one room, kept a while:
// its summary, nil when the room is not visible (or the servers failed).
type remoteSpace struct {
	sum *roomSummary
	at  time.Time
	ttl time.Duration
}

// spaceWalk is the state of one /hierarchy request's questions to other
// servers.
type spaceWalk struct {
	suggested bool
	fetches   int
}

func remoteSpaceKey(roomID string, suggested bool) string {
	if suggested {
		return "s" + roomID
	}
	return "a" + roomID
}

// walkSummary is a room's summary for the hierarchy walk: from this
// server's state when one of its users is joined; otherwise from another
// server (the via servers, federation on); otherwise what this server
// still has of it, or nil.
func (s *Service) walkSummary(ctx context.Context, w *spaceWalk, roomID string, via []string) (*roomSummary, error) {
	sum, err := s.summarize(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if s.opts.Spaces == nil {
		return sum, nil
	}
	if sum != nil {
		in, err := s.localJoined(ctx, roomID)
		if err != nil {
			return nil, err
		}
		if in {
			return sum, nil
		}
	}
	key := remoteSpaceKey(roomID, w.suggested)
	if rs, ok := s.remoteSpaces.Get(key); ok && time.Since(rs.at) < rs.ttl {
		if rs.sum != nil {
			return rs.sum, nil
		}
		return sum, nil
	}
	if remote := s.fetchRemoteSpace(ctx, w, roomID, via); remote != nil {
		return remote, nil
	}
	return sum, nil
}

// fetchRemoteSpace asks the via servers about a room, one after the
// other, and keeps the first answer (and its children's summaries).
func (s *Service) fetchRemoteSpace(ctx context.Context, w *spaceWalk, roomID string, via []string) *roomSummary {
	tried := 0
	asked := false
	for _, srv := range via {
		if tried == maxViaTried || w.fetches == maxRemoteFetches {
			break
		}
		if srv == s.opts.ServerName || !ids.ValidServerName(srv) {
			continue
		}
		tried++
		w.fetches++
		asked = true
		fctx, cancel := context.WithTimeout(ctx, remoteFetchTimeout)
		h, err := s.opts.Spaces.RemoteHierarchy(fctx, srv, roomID, w.suggested)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			logging.From(ctx).WithError(err).WithFields(logrus.Fields{"room_id": roomID, "server": srv}).Info("Space hierarchy: another server did not answer")
			continue
		}
		root := saneRemoteRoom(h.Room)
		if root == nil || root.RoomID != roomID {
			continue
		}
		now := time.Now()
		s.remoteSpaces.Put(remoteSpaceKey(roomID, w.suggested), remoteSpace{sum: root, at: now, ttl: remoteSpaceTTL})
		for i, c := range h.Children {
			if i == maxServerChildren {
				break
			}
			cs := saneRemoteRoom(c)
			// A space child without its m.space.child events is asked
			// about itself when the walk reaches it.
			if cs == nil || cs.RoomType == "m.space" && c.ChildrenState == nil {
				continue
			}
			s.remoteSpaces.Put(remoteSpaceKey(cs.RoomID, w.suggested), remoteSpace{sum: cs, at: now, ttl: remoteSpaceTTL})
		}
		for i, id := range h.InaccessibleChildren {
			if i == maxServerChildren {
				break
			}
			if storableRoomID(id) {
				s.remoteSpaces.Put(remoteSpaceKey(id, w.suggested), remoteSpace{at: now, ttl: remoteSpaceTTL})
			}
		}
		return root
	}
	if asked {
		s.remoteSpaces.Put(remoteSpaceKey(roomID, w.suggested), remoteSpace{at: time.Now(), ttl: remoteSpaceFailedTTL})
	}
	return nil
}

// saneRemoteRoom checks a room summary of another server and makes it a
// roomSummary: a valid room ID, texts within bounds, a member count that
// is not negative, and only valid m.space.child events (at most
// maxServerChildren). nil when the room ID is not valid.
func saneRemoteRoom(h HierarchyRoom) *roomSummary {
	if !storableRoomID(h.RoomID) {
		return nil
	}
	for _, p := range []*string{&h.Name, &h.Topic, &h.CanonicalAlias, &h.AvatarURL, &h.JoinRule, &h.RoomType, &h.RoomVersion, &h.Encryption} {
		if len(*p) > maxSummaryText || strings.ContainsRune(*p, 0) {
			*p = ""
		}
	}
	if h.JoinRule == "" {
		h.JoinRule = spec.Invite
	}
	h.NumJoinedMembers = max(h.NumJoinedMembers, 0)
	sum := &roomSummary{}
	for _, id := range h.AllowedRoomIDs {
		if storableRoomID(id) && len(sum.allow) < maxServerChildren {
			sum.allow = append(sum.allow, id)
		}
	}
	h.AllowedRoomIDs = nil
	if h.JoinRule == spec.Restricted || h.JoinRule == spec.KnockRestricted {
		h.AllowedRoomIDs = sum.allow
	}
	seen := map[string]bool{}
	for _, cs := range h.ChildrenState {
		if len(sum.children) == maxServerChildren {
			break
		}
		if cs.Type != spec.MSpaceChild || seen[cs.StateKey] || len(cs.Content) > maxSummaryText || !json.Valid(cs.Content) {
			continue
		}
		if _, err := spec.NewUserID(cs.Sender, true); err != nil {
			continue
		}
		if ch, ok := parseChild(cs.StateKey, cs.Sender, cs.OriginServerTS, cs.Content); ok {
			seen[cs.StateKey] = true
			sum.children = append(sum.children, ch)
		}
	}
	sortChildren(sum.children)
	h.ChildrenState = make([]ChildState, 0, len(sum.children))
	for _, c := range sum.children {
		h.ChildrenState = append(h.ChildrenState, c.state)
	}
	sum.HierarchyRoom = h
	return sum
}
