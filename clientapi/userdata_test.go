package clientapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestProfileEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db)
		alice, _ := e.register("alice", "pw")
		bob, _ := e.register("bob", "pw")
		const p = "/_matrix/client/v3/profile/@alice:test.local"

		r := e.do("GET", p, bob, nil)
		e.want(r, 200, "")
		if r.raw != `{"displayname":"alice"}` {
			t.Fatalf("default profile %s", r.raw)
		}
		e.want(e.do("PUT", p+"/displayname", alice, map[string]string{"displayname": "Alice Liddell"}), 200, "")
		e.want(e.do("PUT", p+"/avatar_url", alice, map[string]string{"avatar_url": "mxc://test.local/abc"}), 200, "")
		if fmt.Sprint(e.rooms.propagated) != "[@alice:test.local @alice:test.local]" {
			t.Fatalf("propagated %v", e.rooms.propagated)
		}
		r = e.do("GET", p, bob, nil)
		if r.raw != `{"avatar_url":"mxc://test.local/abc","displayname":"Alice Liddell"}` {
			t.Fatalf("profile %s", r.raw)
		}
		if r = e.do("GET", p+"/displayname", bob, nil); r.raw != `{"displayname":"Alice Liddell"}` {
			t.Fatalf("displayname %s", r.raw)
		}
		if r = e.do("GET", "/_matrix/client/v3/profile/%40alice%3Atest.local/avatar_url", bob, nil); r.raw != `{"avatar_url":"mxc://test.local/abc"}` {
			t.Fatalf("avatar_url (escaped path) %s", r.raw)
		}
		// Clearing.
		e.want(e.do("PUT", p+"/avatar_url", alice, map[string]string{"avatar_url": ""}), 200, "")
		if r = e.do("GET", p+"/avatar_url", bob, nil); r.raw != `{}` {
			t.Fatalf("cleared avatar %s", r.raw)
		}

		// Errors.
		e.want(e.do("PUT", p+"/displayname", bob, map[string]string{"displayname": "Mallory"}), 403, "M_FORBIDDEN")
		e.want(e.do("PUT", p+"/displayname", "", map[string]string{"displayname": "x"}), 401, "M_MISSING_TOKEN")
		e.want(e.do("PUT", p+"/displayname", alice, map[string]string{}), 400, "M_MISSING_PARAM")
		e.want(e.do("PUT", p+"/displayname", alice, `{"displayname": 3}`), 400, "M_BAD_JSON")
		e.want(e.do("PUT", p+"/displayname", alice, map[string]string{"displayname": strings.Repeat("x", 300)}), 400, "M_BAD_JSON")
		e.want(e.do("PUT", p+"/displayname", alice, `{"displayname": "`+strings.Repeat("x", 9000)+`"}`), 413, "M_TOO_LARGE")
		// Any URL, as Synapse takes it; a NUL byte cannot be stored.
		e.want(e.do("PUT", p+"/avatar_url", alice, map[string]string{"avatar_url": "http://x/y.png"}), 200, "")
		if r = e.do("GET", p+"/avatar_url", bob, nil); r.raw != `{"avatar_url":"http://x/y.png"}` {
			t.Fatalf("http avatar %s", r.raw)
		}
		e.want(e.do("PUT", p+"/avatar_url", alice, map[string]string{"avatar_url": "mxc://x/\u0000"}), 400, "M_INVALID_PARAM")
		e.want(e.do("GET", "/_matrix/client/v3/profile/@nobody:test.local", bob, nil), 404, "M_NOT_FOUND")
		e.want(e.do("GET", "/_matrix/client/v3/profile/@alice:elsewhere.org", bob, nil), 404, "M_NOT_FOUND")
		e.want(e.do("GET", "/_matrix/client/v3/profile/nonsense/displayname", bob, nil), 404, "M_NOT_FOUND")
		// Closed by default: no look-ups without an access token.
		for _, path := range []string{p, p + "/displayname", p + "/avatar_url"} {
			e.want(e.do("GET", path, "", nil), 401, "M_MISSING_TOKEN")
		}
	})
}

// TestProfileLookUpSettings: profiles.require_token off answers without a
// token; profiles.limit_to_shared_rooms answers only users who may see
// the profile (403 M_FORBIDDEN for the others, existing or not).
func TestProfileLookUpSettings(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		open := utServer(t, db, func(c *config.Config) { c.Profiles.RequireToken = false })
		open.register("alice", "pw")
		open.want(open.do("GET", "/_matrix/client/v3/profile/@alice:test.local", "", nil), 200, "")

		e := utServer(t, db, func(c *config.Config) { c.Profiles.LimitToSharedRooms = true })
		e.rooms.visible = map[string]bool{"@bob:test.local>@alice:test.local": true}
		alice := e.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw"}).str("access_token")
		bob, _ := e.register("bob", "pw")
		carol, _ := e.register("carol", "pw")
		const p = "/_matrix/client/v3/profile/@alice:test.local"
		for _, path := range []string{p, p + "/displayname", p + "/avatar_url"} {
			if r := e.do("GET", path, bob, nil); r.status != 200 || !strings.Contains(r.raw, "alice") && !strings.HasSuffix(path, "avatar_url") {
				t.Fatalf("%s for bob: %d %s", path, r.status, r.raw)
			}
			e.want(e.do("GET", path, carol, nil), 403, "M_FORBIDDEN")
			e.want(e.do("GET", path, "", nil), 401, "M_MISSING_TOKEN")
		}
		e.want(e.do("GET", "/_matrix/client/v3/profile/@nobody:test.local", carol, nil), 403, "M_FORBIDDEN")
		e.want(e.do("GET", "/_matrix/client/v3/profile/@carol:test.local", carol, nil), 200, "")
		e.want(e.do("GET", p, alice, nil), 200, "")
	})
}

func TestAccountDataEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db)
		alice, _ := e.register("alice", "pw")
		bob, _ := e.register("bob", "pw")
		const g = "/_matrix/client/v3/user/@alice:test.local/account_data/"
		const rm = "/_matrix/client/v3/user/@alice:test.local/rooms/!room:test.local/account_data/"

		e.want(e.do("GET", g+"m.direct", alice, nil), 404, "M_NOT_FOUND")
		e.want(e.do("PUT", g+"m.direct", alice, map[string]any{"@bob:test.local": []string{"!dm:test.local"}}), 200, "")
		if r := e.do("GET", g+"m.direct", alice, nil); r.raw != `{"@bob:test.local":["!dm:test.local"]}` {
			t.Fatalf("global %s", r.raw)
		}
		e.want(e.do("PUT", rm+"m.tag", alice, map[string]any{"tags": map[string]any{"u.work": map[string]any{}}}), 200, "")
		if r := e.do("GET", rm+"m.tag", alice, nil); r.raw != `{"tags":{"u.work":{}}}` {
			t.Fatalf("room %s", r.raw)
		}
		e.want(e.do("GET", g+"m.tag", alice, nil), 404, "M_NOT_FOUND")
		if pos := e.users.AccountDataPosition(); pos != 2 {
			t.Fatalf("stream position %d", pos)
		}

		// Server-managed types: 405 M_BAD_JSON, global and per room; readable.
		for _, path := range []string{g + "m.fully_read", g + "m.push_rules", rm + "m.fully_read", rm + "m.push_rules"} {
			e.want(e.do("PUT", path, alice, map[string]string{"event_id": "$x"}), 405, "M_BAD_JSON")
		}
		if r := e.do("GET", g+"m.push_rules", alice, nil); r.status != 200 || !strings.Contains(r.raw, `".m.rule.master"`) {
			t.Fatalf("m.push_rules %d %.100s", r.status, r.raw)
		}

		// Only yourself; only objects; room IDs only.
		e.want(e.do("GET", g+"m.direct", bob, nil), 403, "M_FORBIDDEN")
		e.want(e.do("PUT", g+"m.direct", bob, map[string]any{}), 403, "M_FORBIDDEN")
		e.want(e.do("PUT", rm+"m.tag", bob, map[string]any{}), 403, "M_FORBIDDEN")
		e.want(e.do("PUT", g+"m.direct", alice, `[1, 2]`), 400, "M_BAD_JSON")
		e.want(e.do("PUT", g+"m.direct", alice, `"str"`), 400, "M_BAD_JSON")
		e.want(e.do("PUT", g+"m.direct", alice, `{"a":`), 400, "M_NOT_JSON")
		e.want(e.do("PUT", g+"m.direct", alice, ``), 400, "M_NOT_JSON")
		e.want(e.do("PUT", g+"m.direct", alice, `{"a":"`+strings.Repeat("x", 70<<10)+`"}`), 413, "M_TOO_LARGE")
		e.want(e.do("PUT", "/_matrix/client/v3/user/@alice:test.local/rooms/notaroom/account_data/m.tag", alice, map[string]any{}), 400, "M_INVALID_PARAM")
		e.want(e.do("PUT", g+strings.Repeat("t", 300), alice, map[string]any{}), 400, "M_INVALID_PARAM")
		if pos := e.users.AccountDataPosition(); pos != 2 {
			t.Fatalf("refused writes moved the stream to %d", pos)
		}
	})
}

func TestFilterEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db)
		alice, _ := e.register("alice", "pw")
		bob, _ := e.register("bob", "pw")
		const f = "/_matrix/client/v3/user/@alice:test.local/filter"

		r := e.do("POST", f, alice, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 20}}})
		e.want(r, 200, "")
		if r.raw != `{"filter_id":"0"}` {
			t.Fatalf("filter id %s", r.raw)
		}
		r = e.do("GET", f+"/0", alice, nil)
		e.want(r, 200, "")
		var got map[string]any
		if err := json.Unmarshal([]byte(r.raw), &got); err != nil || fmt.Sprint(got) != "map[room:map[timeline:map[limit:20]]]" {
			t.Fatalf("filter %s", r.raw)
		}
		if r = e.do("POST", f, alice, map[string]any{"presence": map[string]any{"not_types": []string{"*"}}}); r.raw != `{"filter_id":"1"}` {
			t.Fatalf("second filter %s", r.raw)
		}
		e.want(e.do("GET", f+"/7", alice, nil), 404, "M_NOT_FOUND")
		e.want(e.do("GET", f+"/abc", alice, nil), 404, "M_NOT_FOUND")
		e.want(e.do("GET", f+"/0", bob, nil), 404, "M_NOT_FOUND")
		e.want(e.do("POST", f, bob, map[string]any{}), 403, "M_FORBIDDEN")
		e.want(e.do("POST", f, alice, `{"room": `), 400, "M_NOT_JSON")
		e.want(e.do("POST", f, alice, `[1]`), 400, "M_BAD_JSON")
		e.want(e.do("POST", f, alice, `{"room": {"timeline": {"limit": "ten"}}}`), 400, "M_BAD_JSON")
		e.want(e.do("POST", f, alice, ``), 400, "M_NOT_JSON")
	})
}

func TestPushRuleEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := utServer(t, db)
		alice, _ := e.register("alice", "pw")
		const base = "/_matrix/client/v3/pushrules/global/"

		r := e.do("GET", "/_matrix/client/v3/pushrules/", alice, nil)
		e.want(r, 200, "")
		var all struct {
			Global map[string][]map[string]any `json:"global"`
		}
		if err := json.Unmarshal([]byte(r.raw), &all); err != nil {
			t.Fatal(err)
		}
		if len(all.Global["override"]) != 12 || len(all.Global["underride"]) != 5 || all.Global["content"][0]["pattern"] != "alice" || all.Global["room"] == nil {
			t.Fatalf("default rules %s", r.raw)
		}
		r = e.do("GET", base, alice, nil)
		if r.status != 200 || !strings.HasPrefix(r.raw, `{"override":[{"rule_id":".m.rule.master"`) {
			t.Fatalf("/pushrules/global/ %.200s", r.raw)
		}

		ids := func(kind string) string {
			r := e.do("GET", base, alice, nil)
			var rs map[string][]struct {
				RuleID string `json:"rule_id"`
			}
			_ = json.Unmarshal([]byte(r.raw), &rs)
			var out []string
			for _, x := range rs[kind] {
				out = append(out, x.RuleID)
			}
			return strings.Join(out, ",")
		}
		rule := func(pattern string) map[string]any {
			return map[string]any{"pattern": pattern, "actions": []any{"notify", map[string]string{"set_tweak": "sound", "value": "default"}}}
		}
		e.want(e.do("PUT", base+"content/one", alice, rule("one")), 200, "")
		e.want(e.do("PUT", base+"content/two", alice, rule("two")), 200, "")
		e.want(e.do("PUT", base+"content/three?before=one", alice, rule("three")), 200, "")
		e.want(e.do("PUT", base+"content/four?after=one", alice, rule("four")), 200, "")
		if got := ids("content"); got != "two,three,one,four,.m.rule.contains_user_name" {
			t.Fatalf("order %s", got)
		}
		r = e.do("PUT", base+"content/five?before=nothing", alice, rule("five"))
		e.want(r, 400, "M_UNKNOWN")
		if r.str("error") != "before/after rule not found: nothing" {
			t.Fatalf("message %q", r.str("error"))
		}
		e.want(e.do("PUT", base+"content/five?after=.m.rule.contains_user_name", alice, rule("five")), 400, "M_INVALID_PARAM")

		r = e.do("GET", base+"content/three", alice, nil)
		if r.raw != `{"rule_id":"three","default":false,"enabled":true,"pattern":"three","actions":["notify",{"set_tweak":"sound","value":"default"}]}` {
			t.Fatalf("rule %s", r.raw)
		}
		// A room rule whose ID is a room ID, escaped in the path.
		e.want(e.do("PUT", base+"room/%21abc%3Atest.local", alice, map[string]any{"actions": []string{"dont_notify"}}), 200, "")
		if r = e.do("GET", base+"room/%21abc%3Atest.local", alice, nil); r.str("rule_id") != "!abc:test.local" {
			t.Fatalf("room rule %s", r.raw)
		}

		// enabled / actions on user and server-default rules.
		e.want(e.do("PUT", base+"override/.m.rule.master/enabled", alice, map[string]bool{"enabled": true}), 200, "")
		if r = e.do("GET", base+"override/.m.rule.master/enabled", alice, nil); r.raw != `{"enabled":true}` {
			t.Fatalf("enabled %s", r.raw)
		}
		e.want(e.do("PUT", base+"underride/.m.rule.message/actions", alice, map[string]any{"actions": []string{"dont_notify"}}), 200, "")
		if r = e.do("GET", base+"underride/.m.rule.message/actions", alice, nil); r.raw != `{"actions":["dont_notify"]}` {
			t.Fatalf("actions %s", r.raw)
		}
		e.want(e.do("PUT", base+"content/one/enabled", alice, map[string]bool{"enabled": false}), 200, "")
		if r = e.do("GET", base+"content/one/enabled", alice, nil); r.raw != `{"enabled":false}` {
			t.Fatalf("user rule enabled %s", r.raw)
		}
		e.want(e.do("PUT", base+"content/one/enabled", alice, map[string]any{}), 400, "M_MISSING_PARAM")
		e.want(e.do("PUT", base+"content/one/enabled", alice, `{"enabled":"no"}`), 400, "M_BAD_JSON")
		e.want(e.do("PUT", base+"content/one/actions", alice, map[string]any{}), 400, "M_MISSING_PARAM")
		e.want(e.do("PUT", base+"content/one/actions", alice, map[string]any{"actions": []string{"boom"}}), 400, "M_INVALID_PARAM")
		e.want(e.do("GET", base+"content/nothing/enabled", alice, nil), 404, "M_NOT_FOUND")
		e.want(e.do("PUT", base+"content/nothing/actions", alice, map[string]any{"actions": []string{}}), 404, "M_NOT_FOUND")

		// Deleting.
		e.want(e.do("DELETE", base+"content/two", alice, nil), 200, "")
		e.want(e.do("GET", base+"content/two", alice, nil), 404, "M_NOT_FOUND")
		e.want(e.do("DELETE", base+"content/two", alice, nil), 404, "M_NOT_FOUND")
		e.want(e.do("DELETE", base+"override/.m.rule.master", alice, nil), 404, "M_NOT_FOUND")
		e.want(e.do("GET", base+"override/.m.rule.master", alice, nil), 200, "")

		// Bad requests.
		e.want(e.do("PUT", base+"content/.mine", alice, rule("x")), 400, "M_INVALID_PARAM")
		e.want(e.do("PUT", base+"content/a%2Fb", alice, rule("x")), 400, "M_INVALID_PARAM")
		e.want(e.do("PUT", base+"content/six", alice, map[string]any{"actions": []string{"notify"}}), 400, "M_MISSING_PARAM")
		e.want(e.do("PUT", base+"content/six", alice, map[string]any{"pattern": "x"}), 400, "M_MISSING_PARAM")
		e.want(e.do("PUT", base+"content/six", alice, `{"pattern": "x", "actions": "notify"}`), 400, "M_BAD_JSON")
		e.want(e.do("PUT", base+"override/six", alice, `{"actions": [], "conditions": [{"key": "x"}]}`), 400, "M_BAD_JSON")
		e.want(e.do("PUT", base+"bogus/six", alice, rule("x")), 400, "M_INVALID_PARAM")
		e.want(e.do("GET", base+"bogus/six", alice, nil), 400, "M_INVALID_PARAM")
		e.want(e.do("GET", "/_matrix/client/v3/pushrules/", "", nil), 401, "M_MISSING_TOKEN")

		// A kind's list, and malformed paths: 400, never the router's 404 or 405.
		if r = e.do("GET", base+"content/", alice, nil); r.status != 200 || !strings.HasPrefix(r.raw, `[{"rule_id":"three"`) {
			t.Fatalf("content rules %.200s", r.raw)
		}
		const root = "/_matrix/client/v3/pushrules"
		for _, c := range []struct{ method, path, errcode string }{
			{"GET", root, "M_UNRECOGNIZED"},
			{"GET", root + "/global", "M_UNRECOGNIZED"},
			{"GET", root + "/global/room", "M_UNRECOGNIZED"},
			{"GET", root + "//room/x", "M_UNRECOGNIZED"},
			{"GET", root + "/device/", "M_UNRECOGNIZED"},
			{"GET", root + "/global/bogus/", "M_INVALID_PARAM"},
			{"GET", root + "/global//x", "M_UNRECOGNIZED"},
			{"GET", root + "/global/override/.m.rule.master/pattern", "M_UNRECOGNIZED"},
			{"GET", root + "/global/override/.m.rule.master/enabled/x", "M_UNRECOGNIZED"},
			{"GET", root + "/global/override//enabled", "M_UNRECOGNIZED"},
			{"PUT", root + "/", "M_UNRECOGNIZED"},
			{"PUT", root, "M_UNRECOGNIZED"},
			{"PUT", root + "/device/room/x", "M_UNRECOGNIZED"},
			{"PUT", root + "/global/", "M_UNRECOGNIZED"},
			{"PUT", root + "/global/room", "M_UNRECOGNIZED"},
			{"PUT", root + "/global/room/", "M_UNRECOGNIZED"},
			{"PUT", root + "/global/override/.m.rule.master/not_an_attr", "M_UNRECOGNIZED"},
			{"DELETE", root + "/global/room/", "M_UNRECOGNIZED"},
			{"DELETE", root + "/global/content/one/enabled", "M_UNRECOGNIZED"},
			{"DELETE", root + "/other/content/one", "M_UNRECOGNIZED"},
		} {
			if r = e.do(c.method, c.path, alice, map[string]any{"actions": []string{"notify"}, "enabled": true}); r.status != 400 || r.str("errcode") != c.errcode {
				t.Errorf("%s %s: %d %s, want 400 %s", c.method, c.path, r.status, r.raw, c.errcode)
			}
		}

		// Changes are on the account data stream.
		items, err := e.users.AccountDataSince(t.Context(), "@alice:test.local", 0, e.users.AccountDataPosition())
		if err != nil || len(items) != 1 || items[0].Type != "m.push_rules" || items[0].Pos != e.users.AccountDataPosition() {
			t.Fatalf("account data %+v %v", items, err)
		}
	})
}
