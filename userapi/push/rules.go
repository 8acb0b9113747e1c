package push

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/haven-chat/haven/userapi"
)

// condKind is a push condition kind.
type condKind uint8

const (
	condUnknown condKind = iota // never matches (the spec's rule for unknown kinds)
	condEventMatch
	condPropertyIs
	condPropertyContains
	condDisplayName
	condMemberCount
	condSenderPermission
)

type cond struct {
	kind condKind
	key  string
	pat  pattern
	// body is set when event_match looks at content.body: a word match.
	body bool
	val  value
	// room_member_count: op is one of "==", "<", ">", "<=", ">="
	op string
	n  int64
}

// Actions are what a matching rule asks for.
type Actions struct {
	Notify    bool
	Highlight bool
	// Sound is the sound tweak ("" for none).
	Sound string
	// Raw is the rule's actions as stored, for /notifications.
	Raw json.RawMessage
}

type rule struct {
	id    string
	conds []cond
	act   *Actions
	// legacy marks the pre-m.mentions mention rules, which do not apply to
	// events that carry m.mentions.
	legacy bool
}

// Rules is one user's push rules compiled for evaluation, in evaluation
// order (override, content, room, sender, underride), enabled rules only.
type Rules struct {
	UserID string
	rules  []rule
}

// RoomContext is what conditions need to know about the room.
type RoomContext struct {
	MemberCount int
	// SenderLevel is the sender's power level; NotifyLevel returns the
	// level a notification key (such as "room") needs.
	SenderLevel  int64
	NotifyLevels map[string]int64
}

func (rc *RoomContext) notifyLevel(key string) int64 {
	if l, ok := rc.NotifyLevels[key]; ok {
		return l
	}
	return 50
}

var legacyMentionRules = map[string]bool{
	".m.rule.contains_display_name": true,
	".m.rule.contains_user_name":    true,
	".m.rule.roomnotif":             true,
}

// Compile turns a user's ruleset into its evaluator form. It has the
// signature userapi.Service.CompiledPushRules expects.
func Compile(userID string, rs userapi.Ruleset) (any, error) {
	return compileRules(userID, rs), nil
}

func compileRules(userID string, rs userapi.Ruleset) *Rules {
	out := &Rules{UserID: userID}
	for _, kind := range userapi.PushRuleKinds {
		for _, r := range *rs.Kind(kind) {
			if !r.Enabled {
				continue
			}
			cr := rule{id: r.RuleID, act: compileActions(r.Actions), legacy: r.Default && legacyMentionRules[r.RuleID]}
			switch kind {
			case "override", "underride":
				if r.Conditions != nil {
					for _, c := range *r.Conditions {
						cr.conds = append(cr.conds, compileCond(c))
					}
				}
			case "content":
				if r.Pattern == nil {
					continue
				}
				cr.conds = []cond{{kind: condEventMatch, key: "content.body", body: true, pat: compilePattern(*r.Pattern)}}
			case "room":
				cr.conds = []cond{{kind: condEventMatch, key: "room_id", pat: pattern{lower: strings.ToLower(r.RuleID)}}}
			case "sender":
				cr.conds = []cond{{kind: condEventMatch, key: "sender", pat: pattern{lower: strings.ToLower(r.RuleID)}}}
			}
			out.rules = append(out.rules, cr)
		}
	}
	return out
}

func compileCond(raw json.RawMessage) cond {
	var c struct {
		Kind    string          `json:"kind"`
		Key     string          `json:"key"`
		Pattern *string         `json:"pattern"`
		Value   json.RawMessage `json:"value"`
		Is      string          `json:"is"`
	}
	if json.Unmarshal(raw, &c) != nil {
		return cond{}
	}
	switch c.Kind {
	case "event_match":
		if c.Key == "" || c.Pattern == nil {
			return cond{}
		}
		return cond{kind: condEventMatch, key: c.Key, pat: compilePattern(*c.Pattern), body: c.Key == "content.body"}
	case "event_property_is", "event_property_contains":
		v, ok := valueFromJSON(c.Value)
		if c.Key == "" || !ok {
			return cond{}
		}
		k := condPropertyIs
		if c.Kind == "event_property_contains" {
			k = condPropertyContains
		}
		return cond{kind: k, key: c.Key, val: v}
	case "contains_display_name":
		return cond{kind: condDisplayName}
	case "room_member_count":
		op, n, ok := parseMemberCount(c.Is)
		if !ok {
			return cond{}
		}
		return cond{kind: condMemberCount, op: op, n: n}
	case "sender_notification_permission":
		if c.Key == "" {
			return cond{}
		}
		return cond{kind: condSenderPermission, key: c.Key}
	}
	return cond{}
}

// parseMemberCount parses "2", "==2", "<10", ">=3"...
func parseMemberCount(is string) (string, int64, bool) {
	op := "=="
	for _, p := range []string{"==", "<=", ">=", "<", ">"} {
		if strings.HasPrefix(is, p) {
			op, is = p, is[len(p):]
			break
		}
	}
	n, err := strconv.ParseInt(is, 10, 64)
	if err != nil || n < 0 {
		return "", 0, false
	}
	return op, n, true
}

func compileActions(list []json.RawMessage) *Actions {
	a := &Actions{}
	raw, _ := json.Marshal(list)
	if list == nil {
		raw = []byte("[]")
	}
	a.Raw = raw
	for _, x := range list {
		x = bytes.TrimSpace(x)
		var s string
		if len(x) > 0 && x[0] == '"' && json.Unmarshal(x, &s) == nil {
			switch s {
			case "notify", "coalesce":
				a.Notify = true
			}
			continue
		}
		var tw struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(x, &tw) != nil {
			continue
		}
		switch tw.SetTweak {
		case "highlight":
			var b bool
			if len(tw.Value) == 0 || (json.Unmarshal(tw.Value, &b) == nil && b) {
				a.Highlight = true
			}
		case "sound":
			_ = json.Unmarshal(tw.Value, &a.Sound)
		}
	}
	return a
}

// Evaluate returns the actions of the first of the user's rules that
// matches the event, or nil when none does. displayName is the user's name
// in the room, lowered ("" if none).
func (r *Rules) Evaluate(ev *Event, rc *RoomContext, displayName string) (*Actions, string) {
	for i := range r.rules {
		ru := &r.rules[i]
		if ru.legacy && ev.hasMentions {
			continue
		}
		ok := true
		for j := range ru.conds {
			if !ru.conds[j].match(ev, rc, displayName) {
				ok = false
				break
			}
		}
		if ok {
			return ru.act, ru.id
		}
	}
	return nil, ""
}

func (c *cond) match(ev *Event, rc *RoomContext, displayName string) bool {
	switch c.kind {
	case condEventMatch:
		if c.body {
			return ev.hasBody && c.pat.matchWords(ev.lowerBody)
		}
		v, ok := ev.fields[c.key]
		return ok && v.kind == kindString && c.pat.matchWhole(v.s)
	case condPropertyIs:
		v, ok := ev.fields[c.key]
		return ok && v.equal(c.val)
	case condPropertyContains:
		v, ok := ev.fields[c.key]
		if !ok || v.kind != kindArray {
			return false
		}
		for _, x := range v.arr {
			if x.equal(c.val) {
				return true
			}
		}
		return false
	case condDisplayName:
		if displayName == "" || !ev.hasBody {
			return false
		}
		return containsWord(ev.lowerBody, displayName)
	case condMemberCount:
		n := int64(rc.MemberCount)
		switch c.op {
		case "==":
			return n == c.n
		case "<":
			return n < c.n
		case ">":
			return n > c.n
		case "<=":
			return n <= c.n
		case ">=":
			return n >= c.n
		}
		return false
	case condSenderPermission:
		return rc.SenderLevel >= rc.notifyLevel(c.key)
	}
	return false
}
