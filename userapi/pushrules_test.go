package userapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func ruleIDs(list []PushRule) string {
	var ids []string
	for _, r := range list {
		ids = append(ids, r.RuleID)
	}
	return strings.Join(ids, ",")
}

func acts(s string) []json.RawMessage {
	var out []json.RawMessage
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		panic(err)
	}
	return out
}

func TestPushRules(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		bus := newFakeBus()
		s := newTestService(t, db, bus)
		u := mustRegister(t, s, "alice", "pw").UserID
		put := func(kind, id, before, after string, in PushRuleInput) error {
			return s.PutPushRule(ctx, u, kind, id, before, after, in)
		}
		rules := func(kind string) string {
			rs, err := s.PushRuleset(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			return ruleIDs(*rs.Kind(kind))
		}
		notify := acts(`["notify"]`)
		pat := func(p string) *string { return &p }

		// Content rules: a new rule goes first; user rules before defaults.
		wantCode(t, put("content", "a", "", "", PushRuleInput{Actions: notify, Pattern: pat("cake")}), "")
		wantCode(t, put("content", "b", "", "", PushRuleInput{Actions: notify, Pattern: pat("pie")}), "")
		if got := rules("content"); got != "b,a,.m.rule.contains_user_name" {
			t.Fatalf("content %s", got)
		}
		wantCode(t, put("content", "c", "a", "", PushRuleInput{Actions: notify, Pattern: pat("tart")}), "")
		wantCode(t, put("content", "d", "", "b", PushRuleInput{Actions: notify, Pattern: pat("flan")}), "")
		if got := rules("content"); got != "b,d,c,a,.m.rule.contains_user_name" {
			t.Fatalf("after before/after: %s", got)
		}
		// Moving an existing rule; before wins over after.
		wantCode(t, put("content", "a", "b", "c", PushRuleInput{Actions: notify, Pattern: pat("cake")}), "")
		if got := rules("content"); got != "a,b,d,c,.m.rule.contains_user_name" {
			t.Fatalf("after move: %s", got)
		}
		// Updating in place keeps the position.
		wantCode(t, put("content", "d", "", "", PushRuleInput{Actions: acts(`["dont_notify"]`), Pattern: pat("flan2")}), "")
		if got := rules("content"); got != "a,b,d,c,.m.rule.contains_user_name" {
			t.Fatalf("after update: %s", got)
		}
		r, err := s.GetPushRule(ctx, u, "content", "d")
		wantCode(t, err, "")
		if *r.Pattern != "flan2" || string(r.Actions[0]) != `"dont_notify"` || r.Default || !r.Enabled || r.Conditions != nil {
			t.Fatalf("rule d %+v", r)
		}

		// Override rules sit between the master rule and the other defaults.
		wantCode(t, put("override", "mine", "", "", PushRuleInput{Actions: notify, Conditions: acts(`[{"kind":"event_match","key":"type","pattern":"x"}]`)}), "")
		if got := rules("override"); !strings.HasPrefix(got, ".m.rule.master,mine,.m.rule.suppress_notices") {
			t.Fatalf("override %s", got)
		}
		wantCode(t, put("underride", "low", "", "", PushRuleInput{Actions: notify}), "")
		r, _ = s.GetPushRule(ctx, u, "underride", "low")
		if r.Conditions == nil || len(*r.Conditions) != 0 {
			t.Fatalf("underride without conditions: %+v", r)
		}
		wantCode(t, put("room", "!r:test.local", "", "", PushRuleInput{Actions: notify}), "")
		wantCode(t, put("sender", "@bob:test.local", "", "", PushRuleInput{Actions: notify}), "")
		if rules("room") != "!r:test.local" || rules("sender") != "@bob:test.local" {
			t.Fatalf("room %s sender %s", rules("room"), rules("sender"))
		}

		// Errors.
		wantCode(t, put("content", ".m.rule.x", "", "", PushRuleInput{Actions: notify, Pattern: pat("x")}), "M_INVALID_PARAM")
		wantCode(t, put("content", "a/b", "", "", PushRuleInput{Actions: notify, Pattern: pat("x")}), "M_INVALID_PARAM")
		wantCode(t, put("content", "e", "", "", PushRuleInput{Actions: notify}), "M_MISSING_PARAM")
		wantCode(t, put("content", "e", "", "", PushRuleInput{Pattern: pat("x")}), "M_MISSING_PARAM")
		wantCode(t, put("content", "e", "nope", "", PushRuleInput{Actions: notify, Pattern: pat("x")}), "M_UNKNOWN")
		wantCode(t, put("content", "e", ".m.rule.contains_user_name", "", PushRuleInput{Actions: notify, Pattern: pat("x")}), "M_INVALID_PARAM")
		wantCode(t, put("weird", "e", "", "", PushRuleInput{Actions: notify}), "M_INVALID_PARAM")
		wantCode(t, put("override", "e", "", "", PushRuleInput{Actions: notify, Conditions: acts(`[1]`)}), "M_BAD_JSON")
		if strings.Contains(","+rules("content")+",", ",e,") {
			t.Fatal("a refused rule was stored")
		}

		// Server-default rules: enable/disable and actions, not delete.
		wantCode(t, s.SetPushRuleEnabled(ctx, u, "override", ".m.rule.master", true), "")
		wantCode(t, s.SetPushRuleActions(ctx, u, "underride", ".m.rule.message", acts(`["notify",{"set_tweak":"sound","value":"ping"}]`)), "")
		r, _ = s.GetPushRule(ctx, u, "override", ".m.rule.master")
		if !r.Enabled || !r.Default {
			t.Fatalf("master %+v", r)
		}
		r, _ = s.GetPushRule(ctx, u, "underride", ".m.rule.message")
		if len(r.Actions) != 2 {
			t.Fatalf("message actions %s", r.Actions)
		}
		wantCode(t, s.DeletePushRule(ctx, u, "override", ".m.rule.master"), "M_NOT_FOUND")
		wantCode(t, s.SetPushRuleEnabled(ctx, u, "override", ".m.rule.nope", true), "M_NOT_FOUND")
		wantCode(t, s.SetPushRuleEnabled(ctx, u, "content", ".m.rule.master", true), "M_NOT_FOUND")
		wantCode(t, s.SetPushRuleActions(ctx, u, "content", "a", nil), "M_MISSING_PARAM")
		wantCode(t, s.SetPushRuleEnabled(ctx, u, "content", "a", false), "")
		r, _ = s.GetPushRule(ctx, u, "content", "a")
		if r.Enabled {
			t.Fatal("user rule still enabled")
		}
		// Replacing a disabled rule keeps it disabled.
		wantCode(t, put("content", "a", "", "", PushRuleInput{Actions: notify, Pattern: pat("cake")}), "")
		if r, _ = s.GetPushRule(ctx, u, "content", "a"); r.Enabled {
			t.Fatal("replacing enabled the rule")
		}

		// Deleting user rules.
		wantCode(t, s.DeletePushRule(ctx, u, "content", "b"), "")
		wantCode(t, s.DeletePushRule(ctx, u, "content", "b"), "M_NOT_FOUND")
		_, err = s.GetPushRule(ctx, u, "content", "b")
		wantCode(t, err, "M_NOT_FOUND")

		// Stored, read back by a fresh service.
		fresh := newTestService(t, db, nil)
		a, _ := s.PushRules(ctx, u)
		b, err := fresh.PushRules(ctx, u)
		if err != nil || string(a) != string(b) {
			t.Fatalf("fresh read differs:\n%s\n%s", a, b)
		}
		if !strings.HasPrefix(string(a), `{"global":{"override":[`) {
			t.Fatalf("rendered %s", a)
		}

		// Every change was published as m.push_rules account data, and the
		// account data endpoint shows the ruleset.
		var n int
		for _, no := range bus.notices(t) {
			if no.Type == TypePushRules && no.RoomID == "" && no.UserID == u {
				n++
			}
		}
		if n < 15 {
			t.Fatalf("%d m.push_rules notices", n)
		}
		got, err := s.GetAccountData(ctx, u, "", TypePushRules)
		if err != nil || string(got) != string(a) {
			t.Fatalf("account data m.push_rules %s %v", got, err)
		}
		items, _ := s.AccountDataSince(ctx, u, 1, s.AccountDataPosition())
		if len(items) != 1 || items[0].Type != TypePushRules || string(items[0].Content) != string(a) {
			t.Fatalf("since: %+v", items)
		}

		// Back to the defaults: no stored row.
		wantCode(t, s.SetPushRuleEnabled(ctx, u, "override", ".m.rule.master", false), "")
		wantCode(t, s.SetPushRuleActions(ctx, u, "underride", ".m.rule.message", acts(`["notify"]`)), "")
		for _, k := range []string{"content", "override", "underride", "room", "sender"} {
			rs, _ := s.PushRuleset(ctx, u)
			for _, r := range *rs.Kind(k) {
				if !r.Default {
					wantCode(t, s.DeletePushRule(ctx, u, k, r.RuleID), "")
				}
			}
		}
		var rows int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM push_rules WHERE user_id = $1`, u).Scan(&rows); err != nil || rows != 0 {
			t.Fatalf("%d push_rules rows after returning to defaults (%v)", rows, err)
		}
		def, _ := DefaultPushRules(u)
		now, _ := s.PushRuleset(ctx, u)
		x, _ := json.Marshal(def)
		y, _ := json.Marshal(now)
		if string(x) != string(y) {
			t.Fatalf("not back to defaults:\n%s\n%s", x, y)
		}
	})
}

// TestDefaultRulesFastPath: a user without rules of their own gets, from the
// rendered template, exactly what building their rules gives.
func TestDefaultRulesFastPath(t *testing.T) {
	for _, u := range []string{"@alice:example.org", "@a.b_c=d-e/f+g:h.example:8448", "@x:localhost"} {
		built, err := buildPushState(u, &pushDelta{})
		if err != nil {
			t.Fatal(err)
		}
		fast, err := defaultRendered(u)
		if err != nil {
			t.Fatal(err)
		}
		if string(fast) != string(built.rendered) {
			t.Fatalf("%s:\n%s\n%s", u, fast, built.rendered)
		}
		st := &pushState{rendered: fast}
		rs, err := st.ruleset()
		if err != nil || len(rs.Override) == 0 || len(rs.Underride) == 0 {
			t.Fatalf("parsed %+v %v", rs, err)
		}
	}
}
