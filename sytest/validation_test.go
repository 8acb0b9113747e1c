package sytest

import (
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Tests of what the server accepts and refuses, with the spec's (or, where
// it is silent, Synapse's) status and errcode.

// TestValidationAliasErrors: an alias that is not one (or a room_alias_name
// that cannot make one) is 400 M_INVALID_PARAM on every directory route and
// on createRoom, and so is an alias of another server on PUT; any other
// Unicode is a fine localpart (sytest "Room aliases can contain Unicode").
func TestValidationAliasErrors(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		body := map[string]any{"room_id": room}
		for _, bad := range []string{"lobby", "lobby:localhost", "#lobby", "#:localhost", "#lo bby:localhost", "#lo#bby:localhost", "#lobby:", "#lobby:bad host", "#lobby:localhost:0"} {
			path := v3 + "/directory/room/" + p(bad)
			s.do(t, "PUT", path, alice.AccessToken, body).wantErr(t, 400, "M_INVALID_PARAM")
			s.do(t, "GET", path, alice.AccessToken, nil).wantErr(t, 400, "M_INVALID_PARAM")
			s.do(t, "DELETE", path, alice.AccessToken, nil).wantErr(t, 400, "M_INVALID_PARAM")
		}
		for _, other := range []string{"#lobby:elsewhere.org", "#lobby:localhost:8448", "#lobby:local"} {
			s.do(t, "PUT", v3+"/directory/room/"+p(other), alice.AccessToken, body).wantErr(t, 400, "M_INVALID_PARAM")
		}
		for _, bad := range []string{"a:b", "a b", "#a", "a\tb", strings.Repeat("x", 250)} {
			s.do(t, "POST", v3+"/createRoom", alice.AccessToken, map[string]any{"room_alias_name": bad}).wantErr(t, 400, "M_INVALID_PARAM")
		}
		s.do(t, "PUT", v3+"/directory/room/"+p("#☕:localhost"), alice.AccessToken, body).expect(t, 200)
		if got := s.do(t, "GET", v3+"/directory/room/"+p("#☕:localhost"), "", nil).expect(t, 200).str("room_id"); got != room.String() {
			t.Fatalf("unicode alias resolves to %q", got)
		}
	})
}

// TestValidationCanonicalAlias: m.room.canonical_alias may be emptied (no
// alias, a null one, or no content at all); an alias it adds must be an
// alias (M_INVALID_PARAM) of this room (M_BAD_ALIAS), while the aliases it
// already had pass as they are. Deleting a directory alias takes it out of
// the event when the deleting user may change it (sytest "Can delete
// canonical alias"); a user who may not still deletes the alias ("Alias
// creators can delete canonical alias with no ops").
func TestValidationCanonicalAlias(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		join(t, bob, room.String())
		state := v3 + "/rooms/" + p(room) + "/state/m.room.canonical_alias"
		put := func(content any) apiResp { return s.do(t, "PUT", state, alice.AccessToken, content) }
		for _, a := range []string{"#main:localhost", "#alt:localhost", "#third:localhost"} {
			s.do(t, "PUT", v3+"/directory/room/"+p(a), alice.AccessToken, map[string]any{"room_id": room}).expect(t, 200)
		}
		// Bob, who has no power in the room, adds an alias of his own.
		s.do(t, "PUT", v3+"/directory/room/"+p("#bobs:localhost"), bob.AccessToken, map[string]any{"room_id": room}).expect(t, 200)
		createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "other"})

		put(map[string]any{"alias": "#main:localhost", "alt_aliases": []string{"#alt:localhost", "#bobs:localhost"}}).expect(t, 200)
		put(map[string]any{"alias": "not-an-alias"}).wantErr(t, 400, "M_INVALID_PARAM")
		put(map[string]any{"alias": 5}).wantErr(t, 400, "M_INVALID_PARAM")
		put(map[string]any{"alt_aliases": "#alt:localhost"}).wantErr(t, 400, "M_INVALID_PARAM")
		put(map[string]any{"alt_aliases": []string{"#nosuch:localhost"}}).wantErr(t, 400, "M_BAD_ALIAS")
		put(map[string]any{"alias": "#other:localhost"}).wantErr(t, 400, "M_BAD_ALIAS")

		// Bob may delete his alias but not change the event: it stays in it.
		s.do(t, "DELETE", v3+"/directory/room/"+p("#bobs:localhost"), bob.AccessToken, nil).expect(t, 200)
		if alt, _ := s.stateOf(t, alice, room, "m.room.canonical_alias", "")["alt_aliases"].([]any); len(alt) != 2 {
			t.Fatalf("alt_aliases after bob's delete: %v", alt)
		}
		// Alice drops #alt and keeps the deleted #bobs: only what is new is checked.
		put(map[string]any{"alias": "#main:localhost", "alt_aliases": []string{"#bobs:localhost"}}).expect(t, 200)
		put(map[string]any{"alias": "#main:localhost", "alt_aliases": []string{"#bobs:localhost", "#alt:localhost"}}).expect(t, 200)

		// Alice deletes #main and #alt from the directory: both leave the event.
		s.do(t, "DELETE", v3+"/directory/room/"+p("#main:localhost"), alice.AccessToken, nil).expect(t, 200)
		s.do(t, "DELETE", v3+"/directory/room/"+p("#alt:localhost"), alice.AccessToken, nil).expect(t, 200)
		ev := s.stateOf(t, alice, room, "m.room.canonical_alias", "")
		if _, has := ev["alias"]; has {
			t.Fatalf("deleted alias still canonical: %v", ev)
		}
		if alt, _ := ev["alt_aliases"].([]any); len(alt) != 1 || alt[0] != "#bobs:localhost" {
			t.Fatalf("alt_aliases after alice's deletes: %v", ev)
		}

		// Emptying the event, in each form clients use.
		for _, c := range []any{map[string]any{}, map[string]any{"alias": nil}, map[string]any{"alias": nil, "alt_aliases": []string{}}} {
			put(c).expect(t, 200)
		}
		put(map[string]any{"alias": "#third:localhost"}).expect(t, 200)
	})
}

// TestValidationContextHidden: /context of an event the user may not see
// is 404 M_NOT_FOUND, the spec's answer for "not found or no permission",
// as for an event that does not exist: for a user never in the room, and
// for a member whose history visibility hides the event.
func TestValidationContextHidden(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{
			{Type: event.StateHistoryVisibility, StateKey: sk(""), Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}},
		}})
		early := sendText(t, alice, room, "before bob")
		join(t, bob, room.String())
		later := sendText(t, alice, room, "after bob")
		ctxPath := func(ev id.EventID) string { return v3 + "/rooms/" + p(room) + "/context/" + p(ev) }
		s.do(t, "GET", ctxPath(later), bob.AccessToken, nil).expect(t, 200)
		s.do(t, "GET", ctxPath(early), bob.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", ctxPath(later), carol.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
		s.do(t, "GET", ctxPath("$nosuch"), bob.AccessToken, nil).expectErr(t, 404, "M_NOT_FOUND")
	})
}

// TestValidationAvatarURL: as Synapse, any avatar URL is taken, mxc:// or
// not, in the profile (and so in member events) and in m.room.avatar.
func TestValidationAvatarURL(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		path := v3 + "/profile/" + p(alice.UserID) + "/avatar_url"
		s.do(t, "PUT", path, alice.AccessToken, map[string]any{"avatar_url": "https://example.org/me.png"}).expect(t, 200)
		if got := s.do(t, "GET", path, alice.AccessToken, nil).expect(t, 200).str("avatar_url"); got != "https://example.org/me.png" {
			t.Fatalf("avatar_url %q", got)
		}
		eventually(t, "the avatar in the member event", func() bool {
			return s.stateOf(t, alice, room, "m.room.member", alice.UserID.String())["avatar_url"] == "https://example.org/me.png"
		})
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/state/m.room.avatar", alice.AccessToken, map[string]any{"url": "https://example.org/room.png"}).expect(t, 200)
		s.do(t, "PUT", path, alice.AccessToken, map[string]any{"avatar_url": strings.Repeat("x", 1001)}).expectErr(t, 400, "M_BAD_JSON")
	})
}

// TestValidationKeyShapes: every shape of key the spec allows is taken:
// one-time keys with other key IDs than curve25519 (signed_curve25519:AAAAHg,
// objects with signatures and fallback), device keys listing several
// algorithms, and backup versions whose auth_data has a public key with or
// without signatures, or the fields of another algorithm.
func TestValidationKeyShapes(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		user, dev := alice.UserID.String(), alice.DeviceID.String()
		k := newTestKey(t)
		signed := func(key string) map[string]any {
			return map[string]any{"key": key, "signatures": map[string]any{user: map[string]any{"ed25519:" + dev: "c2ln"}}}
		}
		dk := map[string]any{"user_id": user, "device_id": dev,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2", "org.example.other"},
			"keys":       map[string]string{"curve25519:" + dev: "Y3VydmU", "ed25519:" + dev: k.pub},
		}
		dk["signatures"] = map[string]any{user: map[string]any{"ed25519:" + dev: "c2ln"}}
		r := s.do(t, "POST", v3+"/keys/upload", alice.AccessToken, map[string]any{
			"device_keys": dk,
			"one_time_keys": map[string]any{
				"signed_curve25519:AAAAHg": signed("a2V5MQ"),
				"signed_curve25519:AAAAHQ": signed("a2V5Mg"),
				"curve25519:AAAAAQ":        "a2V5Mw",
			},
			"fallback_keys": map[string]any{"signed_curve25519:AAAAHw": map[string]any{"key": "ZmFsbA", "fallback": true,
				"signatures": map[string]any{user: map[string]any{"ed25519:" + dev: "c2ln"}}}},
		}).expect(t, 200)
		counts, _ := r.JSON["one_time_key_counts"].(map[string]any)
		if num(counts["signed_curve25519"]) != 2 || num(counts["curve25519"]) != 1 {
			t.Fatalf("counts: %s", r)
		}
		claim := s.do(t, "POST", v3+"/keys/claim", bob.AccessToken, map[string]any{"one_time_keys": map[string]any{user: map[string]any{dev: "signed_curve25519"}}}).expect(t, 200)
		got, _ := claim.JSON["one_time_keys"].(map[string]any)[user].(map[string]any)[dev].(map[string]any)
		if len(got) != 1 {
			t.Fatalf("claim: %s", claim)
		}
		for kid := range got {
			if !strings.HasPrefix(kid, "signed_curve25519:AAAAH") {
				t.Fatalf("claimed %s", kid)
			}
		}

		for _, c := range []struct {
			algorithm string
			authData  map[string]any
		}{
			{"m.megolm_backup.v1.curve25519-aes-sha2", map[string]any{"public_key": "cHVibGlj"}},
			{"m.megolm_backup.v1.curve25519-aes-sha2", map[string]any{"public_key": "cHVibGlj", "signatures": map[string]any{user: map[string]any{"ed25519:" + dev: "c2ln"}}}},
			{"m.megolm_backup.v1.curve25519-aes-sha2", map[string]any{"public_key": "cHVibGlj", "private_key_salt": "c2FsdA", "private_key_iterations": 500000}},
			{"org.matrix.msc3270.v1.aes-hmac-sha2", map[string]any{"iv": "aXY", "mac": "bWFj"}},
			{"org.example.backup", map[string]any{}},
		} {
			v := s.do(t, "POST", v3+"/room_keys/version", alice.AccessToken, map[string]any{"algorithm": c.algorithm, "auth_data": c.authData}).expect(t, 200).str("version")
			s.do(t, "PUT", v3+"/room_keys/version/"+v, alice.AccessToken, map[string]any{"algorithm": c.algorithm, "auth_data": c.authData}).expect(t, 200)
			got := s.do(t, "GET", v3+"/room_keys/version/"+v, alice.AccessToken, nil).expect(t, 200)
			if got.str("algorithm") != c.algorithm {
				t.Fatalf("backup %s: %s", c.algorithm, got)
			}
		}
		// Megolm session IDs are base64, with '+' and '/'.
		v := s.do(t, "POST", v3+"/room_keys/version", alice.AccessToken, map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
			"auth_data": map[string]any{"public_key": "cHVibGlj"}}).expect(t, 200).str("version")
		const sess = "ab+cd/ef0123"
		key := map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{"ciphertext": "eA"}}
		s.do(t, "PUT", v3+"/room_keys/keys/"+p("!r:localhost")+"/"+p(sess)+"?version="+v, alice.AccessToken, key).expect(t, 200)
		all := s.do(t, "GET", v3+"/room_keys/keys?version="+v, alice.AccessToken, nil).expect(t, 200)
		sessions, _ := all.JSON["rooms"].(map[string]any)["!r:localhost"].(map[string]any)["sessions"].(map[string]any)
		if sessions[sess] == nil {
			t.Fatalf("session %s: %s", sess, all)
		}
		s.do(t, "GET", v3+"/room_keys/keys/"+p("!r:localhost")+"/"+p(sess)+"?version="+v, alice.AccessToken, nil).expect(t, 200)
	})
}

// TestServerNameWithPort: a server whose name carries a port gives out
// user IDs, aliases and media URIs with it, and takes them back everywhere:
// aliases from createRoom and the directory, joins by alias, invites,
// profiles, key queries and media.
func TestServerNameWithPort(t *testing.T) {
	const name = "example.com:8448"
	eachDBEnv(t, []string{"HAVEN_SERVER_NAME=" + name}, func(t *testing.T, s *server) {
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		if alice.UserID.String() != "@alice:"+name {
			t.Fatalf("user ID %s", alice.UserID)
		}
		r := s.do(t, "POST", v3+"/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat", "room_alias_name": "lobby",
			"invite": []string{bob.UserID.String()}}).expect(t, 200)
		room, alias := r.str("room_id"), "#lobby:"+name
		if r.str("room_alias") != alias || !strings.HasSuffix(room, ":"+name) {
			t.Fatalf("createRoom: %s", r)
		}
		if got := s.do(t, "GET", v3+"/directory/room/"+p(alias), "", nil).expect(t, 200).str("room_id"); got != room {
			t.Fatalf("resolve %s: %q", alias, got)
		}
		s.do(t, "POST", v3+"/join/"+p(alias), bob.AccessToken, map[string]any{}).expect(t, 200)
		s.do(t, "PUT", v3+"/directory/room/"+p("#second:"+name), bob.AccessToken, map[string]any{"room_id": room}).expect(t, 200)
		s.do(t, "PUT", v3+"/rooms/"+p(room)+"/state/m.room.canonical_alias", alice.AccessToken,
			map[string]any{"alias": alias, "alt_aliases": []string{"#second:" + name}}).expect(t, 200)
		s.do(t, "DELETE", v3+"/directory/room/"+p("#second:"+name), bob.AccessToken, nil).expect(t, 200)

		carol := s.register(t, "carol")
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/invite", alice.AccessToken, map[string]any{"user_id": carol.UserID}).expect(t, 200)
		s.do(t, "POST", v3+"/rooms/"+p(room)+"/invite", alice.AccessToken, map[string]any{"user_id": "@nobody:" + name + "0"}).wantOneOf(t, "invite to another server",
			403, "M_FORBIDDEN", 404, "M_NOT_FOUND", 400, "M_INVALID_PARAM")
		s.do(t, "GET", v3+"/profile/"+p(bob.UserID), alice.AccessToken, nil).expect(t, 200)
		q := s.do(t, "POST", v3+"/keys/query", alice.AccessToken, map[string]any{"device_keys": map[string]any{bob.UserID.String(): []string{}}}).expect(t, 200)
		if f, _ := q.JSON["failures"].(map[string]any); len(f) != 0 {
			t.Fatalf("local user with a port counted as remote: %s", q)
		}
		up := s.do(t, "POST", "/_matrix/media/v3/upload?filename=a.txt", alice.AccessToken, "hello", withHeader("Content-Type", "text/plain")).expect(t, 200)
		uri := up.str("content_uri")
		if !strings.HasPrefix(uri, "mxc://"+name+"/") {
			t.Fatalf("content_uri %s", uri)
		}
		s.do(t, "GET", "/_matrix/client/v1/media/download/"+p(name)+"/"+p(uri[strings.LastIndex(uri, "/")+1:]), alice.AccessToken, nil).expect(t, 200)
		s.do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "password": "password-alice",
			"identifier": map[string]any{"type": "m.id.user", "user": "@alice:" + name}}).expect(t, 200)
	})
}
