package push

import (
	"encoding/json"
	"testing"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/userapi"
)

const me = "@alice:test"

func defaults(t testing.TB) userapi.Ruleset {
	t.Helper()
	rs, err := userapi.DefaultPushRules(me)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func raws(list ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(list))
	for i, s := range list {
		out[i] = json.RawMessage(s)
	}
	return out
}

func strp(s string) *string { return &s }

func ev(typ, sender, content string) *roomserver.Event {
	return &roomserver.Event{Pos: 10, EventID: "$e", RoomID: "!r:test", Type: typ, Sender: sender,
		JSON: json.RawMessage(`{"type":"` + typ + `","content":` + content + `}`)}
}

func stateEv(typ, key, sender, membership, content string) *roomserver.Event {
	e := ev(typ, sender, content)
	e.StateKey = &key
	e.Membership = membership
	return e
}

func TestEvaluateDefaultRules(t *testing.T) {
	room := &RoomContext{MemberCount: 3, SenderLevel: 0}
	mod := &RoomContext{MemberCount: 3, SenderLevel: 50}
	dm := &RoomContext{MemberCount: 2}
	threaded := ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"in a thread","m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}`)
	threaded.RelType, threaded.RelatesTo = "m.thread", "$root"
	tests := []struct {
		name      string
		ev        *roomserver.Event
		rc        *RoomContext
		display   string
		notify    bool
		highlight bool
		sound     string
		rule      string
	}{
		{"plain message", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"hello"}`), room, "", true, false, "", ".m.rule.message"},
		{"message in a one-to-one room", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"hello"}`), dm, "", true, false, "default", ".m.rule.room_one_to_one"},
		{"encrypted one-to-one", ev("m.room.encrypted", "@bob:test", `{"algorithm":"m.megolm.v1.aes-sha2"}`), dm, "", true, false, "default", ".m.rule.encrypted_room_one_to_one"},
		{"encrypted group", ev("m.room.encrypted", "@bob:test", `{"algorithm":"m.megolm.v1.aes-sha2"}`), room, "", true, false, "", ".m.rule.encrypted"},
		{"notice", ev("m.room.message", "@bot:test", `{"msgtype":"m.notice","body":"beep"}`), room, "", false, false, "", ".m.rule.suppress_notices"},
		{"edit", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"* x","m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}`), room, "", false, false, "", ".m.rule.suppress_edits"},
		{"user mention", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"look","m.mentions":{"user_ids":["@alice:test"]}}`), room, "", true, true, "default", ".m.rule.is_user_mention"},
		{"mention of someone else", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"look alice","m.mentions":{"user_ids":["@carol:test"]}}`), room, "Alice", true, false, "", ".m.rule.message"},
		{"display name without m.mentions", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"Hi Alice Smith!"}`), room, "alice smith", true, true, "default", ".m.rule.contains_display_name"},
		{"display name inside a word", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"xalice smithx"}`), room, "alice smith", true, false, "", ".m.rule.message"},
		{"localpart", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"ping ALICE."}`), room, "", true, true, "default", ".m.rule.contains_user_name"},
		{"localpart inside a word", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"malice"}`), room, "", true, false, "", ".m.rule.message"},
		{"@room by a moderator", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"@room meeting"}`), mod, "", true, true, "", ".m.rule.roomnotif"},
		{"@room by anyone", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"@room meeting"}`), room, "", true, false, "", ".m.rule.message"},
		{"room mention by a moderator", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"all","m.mentions":{"room":true}}`), mod, "", true, true, "", ".m.rule.is_room_mention"},
		{"room mention by anyone", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"all","m.mentions":{"room":true}}`), room, "", true, false, "", ".m.rule.message"},
		{"legacy @room with m.mentions", ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"@room x","m.mentions":{}}`), mod, "", true, false, "", ".m.rule.message"},
		{"invite for me", stateEv("m.room.member", me, "@bob:test", "invite", `{"membership":"invite"}`), room, "", true, false, "default", ".m.rule.invite_for_me"},
		{"someone else's invite", stateEv("m.room.member", "@carol:test", "@bob:test", "invite", `{"membership":"invite"}`), room, "", false, false, "", ".m.rule.member_event"},
		{"reaction", ev("m.reaction", "@bob:test", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$x","key":"👍"}}`), room, "", false, false, "", ".m.rule.reaction"},
		{"tombstone", stateEv("m.room.tombstone", "", "@bob:test", "", `{"replacement_room":"!n:test"}`), room, "", true, true, "", ".m.rule.tombstone"},
		{"call invite", ev("m.call.invite", "@bob:test", `{"call_id":"1"}`), room, "", true, false, "ring", ".m.rule.call"},
		{"topic change", stateEv("m.room.topic", "", "@bob:test", "", `{"topic":"x"}`), room, "", false, false, "", ""},
		{"thread reply", threaded, room, "", true, false, "", ".m.rule.message"},
		{"content not an object", ev("m.room.message", "@bob:test", `"x"`), room, "", true, false, "", ".m.rule.message"},
	}
	rules := compileRules(me, defaults(t))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			act, id := rules.Evaluate(ParseEvent(tc.ev), tc.rc, tc.display)
			if id != tc.rule {
				t.Errorf("rule %q, want %q", id, tc.rule)
			}
			if tc.rule == "" {
				if act != nil {
					t.Errorf("actions %+v, want none", act)
				}
				return
			}
			if act.Notify != tc.notify || act.Highlight != tc.highlight || act.Sound != tc.sound {
				t.Errorf("notify %v highlight %v sound %q, want %v %v %q", act.Notify, act.Highlight, act.Sound, tc.notify, tc.highlight, tc.sound)
			}
		})
	}
}

func TestEvaluateUserRules(t *testing.T) {
	msg := ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"The coffee machine is fixed","info":{"n":3,"flag":true,"nothing":null,"tags":["a","b",7]},"a.b":{"c":"dotted"}}`)
	override := func(id string, conds ...string) userapi.PushRule {
		c := raws(conds...)
		return userapi.PushRule{RuleID: id, Enabled: true, Conditions: &c, Actions: raws(`"notify"`, `{"set_tweak":"highlight"}`)}
	}
	tests := []struct {
		name   string
		change func(rs *userapi.Ruleset)
		rule   string
		notify bool
	}{
		{"master rule on", func(rs *userapi.Ruleset) { rs.Override[0].Enabled = true }, ".m.rule.master", false},
		{"room muted", func(rs *userapi.Ruleset) {
			rs.Room = []userapi.PushRule{{RuleID: "!r:test", Enabled: true, Actions: raws(`"dont_notify"`)}}
		}, "!r:test", false},
		{"other room muted", func(rs *userapi.Ruleset) {
			rs.Room = []userapi.PushRule{{RuleID: "!other:test", Enabled: true, Actions: raws()}}
		}, ".m.rule.message", true},
		{"disabled room rule", func(rs *userapi.Ruleset) {
			rs.Room = []userapi.PushRule{{RuleID: "!r:test", Enabled: false, Actions: raws()}}
		}, ".m.rule.message", true},
		{"sender muted", func(rs *userapi.Ruleset) {
			rs.Sender = []userapi.PushRule{{RuleID: "@bob:test", Enabled: true, Actions: raws()}}
		}, "@bob:test", false},
		{"keyword", func(rs *userapi.Ruleset) {
			rs.Content = append([]userapi.PushRule{{RuleID: "coffee", Enabled: true, Pattern: strp("coffee"), Actions: raws(`"notify"`)}}, rs.Content...)
		}, "coffee", true},
		{"keyword glob", func(rs *userapi.Ruleset) {
			rs.Content = append([]userapi.PushRule{{RuleID: "k", Enabled: true, Pattern: strp("co?fe*"), Actions: raws(`"notify"`)}}, rs.Content...)
		}, "k", true},
		{"keyword inside a word", func(rs *userapi.Ruleset) {
			rs.Content = append([]userapi.PushRule{{RuleID: "k", Enabled: true, Pattern: strp("offee"), Actions: raws(`"notify"`)}}, rs.Content...)
		}, ".m.rule.message", true},
		{"event_match glob on type", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"event_match","key":"type","pattern":"m.room.*"}`))
		}, "t", true},
		{"event_match whole value", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"event_match","key":"type","pattern":"m.room"}`))
		}, ".m.rule.message", true},
		{"event_match on a non-string", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"event_match","key":"content.info.n","pattern":"3"}`))
		}, ".m.rule.message", true},
		{"escaped dot key", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"event_match","key":"content.a\\.b.c","pattern":"dotted"}`))
		}, "t", true},
		{"property is int", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"event_property_is","key":"content.info.n","value":3}`))
		}, "t", true},
		{"property is string, not int", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"event_property_is","key":"content.info.n","value":"3"}`))
		}, ".m.rule.message", true},
		{"property is bool", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"event_property_is","key":"content.info.flag","value":true}`))
		}, "t", true},
		{"property is null", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"event_property_is","key":"content.info.nothing","value":null}`))
		}, "t", true},
		{"property contains", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"event_property_contains","key":"content.info.tags","value":7}`))
		}, "t", true},
		{"property contains missing", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"event_property_contains","key":"content.info.tags","value":"c"}`))
		}, ".m.rule.message", true},
		{"member count <= 3", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"room_member_count","is":"<=3"}`))
		}, "t", true},
		{"member count > 3", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"room_member_count","is":">3"}`))
		}, ".m.rule.message", true},
		{"member count bad", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"room_member_count","is":"lots"}`))
		}, ".m.rule.message", true},
		{"unknown condition never matches", func(rs *userapi.Ruleset) {
			rs.Override = append(rs.Override, override("t", `{"kind":"org.example.new"}`))
		}, ".m.rule.message", true},
		{"no conditions match everything", func(rs *userapi.Ruleset) {
			rs.Underride = append([]userapi.PushRule{override("all")}, rs.Underride...)
		}, "all", true},
		{"message rule disabled", func(rs *userapi.Ruleset) {
			for i := range rs.Underride {
				rs.Underride[i].Enabled = false
			}
		}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs := defaults(t)
			tc.change(&rs)
			act, id := compileRules(me, rs).Evaluate(ParseEvent(msg), &RoomContext{MemberCount: 3}, "")
			if id != tc.rule {
				t.Fatalf("rule %q, want %q", id, tc.rule)
			}
			if got := act != nil && act.Notify; got != tc.notify {
				t.Errorf("notify %v, want %v", got, tc.notify)
			}
		})
	}
}

func TestCompileActions(t *testing.T) {
	tests := []struct {
		in                []string
		notify, highlight bool
		sound             string
	}{
		{nil, false, false, ""},
		{[]string{`"notify"`}, true, false, ""},
		{[]string{`"coalesce"`}, true, false, ""},
		{[]string{`"dont_notify"`}, false, false, ""},
		{[]string{`"notify"`, `{"set_tweak":"highlight","value":false}`}, true, false, ""},
		{[]string{`"notify"`, `{"set_tweak":"highlight"}`, `{"set_tweak":"sound","value":"ping"}`}, true, true, "ping"},
		{[]string{`{"set_tweak":"highlight","value":"yes"}`, `42`}, false, false, ""},
	}
	for _, tc := range tests {
		a := compileActions(raws(tc.in...))
		if a.Notify != tc.notify || a.Highlight != tc.highlight || a.Sound != tc.sound {
			t.Errorf("%v: %+v", tc.in, a)
		}
		if !json.Valid(a.Raw) {
			t.Errorf("%v: raw %s", tc.in, a.Raw)
		}
	}
}

func BenchmarkEvaluateTenMembers(b *testing.B) {
	rules := make([]*Rules, 9)
	for i := range rules {
		rs, _ := userapi.DefaultPushRules("@user" + string(rune('a'+i)) + ":test")
		rules[i] = compileRules("@user"+string(rune('a'+i))+":test", rs)
	}
	e := ev("m.room.message", "@bob:test", `{"msgtype":"m.text","body":"a perfectly ordinary message about lunch"}`)
	rc := &RoomContext{MemberCount: 10}
	b.ReportAllocs()
	for b.Loop() {
		pe := ParseEvent(e)
		for _, r := range rules {
			r.Evaluate(pe, rc, "some name")
		}
	}
}
