package userapi

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// PushRuleKinds are the kinds of push rules, in the order they are evaluated.
var PushRuleKinds = []string{"override", "content", "room", "sender", "underride"}

// MaxUserPushRules bounds the user-defined push rules of one user.
const MaxUserPushRules = 500

// MaxPushRuleIDBytes bounds push rule IDs.
const MaxPushRuleIDBytes = 255

// PushRule is one push rule as the API shows it. Conditions is set for
// override and underride rules, Pattern for content rules.
type PushRule struct {
	RuleID     string             `json:"rule_id"`
	Default    bool               `json:"default"`
	Enabled    bool               `json:"enabled"`
	Conditions *[]json.RawMessage `json:"conditions,omitempty"`
	Pattern    *string            `json:"pattern,omitempty"`
	Actions    []json.RawMessage  `json:"actions"`
}

// Ruleset is the "global" push ruleset. Its slices are never nil, and must
// not be modified by callers.
type Ruleset struct {
	Override  []PushRule `json:"override"`
	Content   []PushRule `json:"content"`
	Room      []PushRule `json:"room"`
	Sender    []PushRule `json:"sender"`
	Underride []PushRule `json:"underride"`
}

// Kind returns the rules of one kind; nil for an unknown kind.
func (rs *Ruleset) Kind(kind string) *[]PushRule {
	switch kind {
	case "override":
		return &rs.Override
	case "content":
		return &rs.Content
	case "room":
		return &rs.Room
	case "sender":
		return &rs.Sender
	case "underride":
		return &rs.Underride
	}
	return nil
}

// pushDelta is what push_rules.rules stores: the user's own rules per kind,
// in priority order, and the changes made to server-default rules (keyed
// "kind/rule_id"). No row means the defaults unchanged.
type pushDelta struct {
	User     map[string][]PushRule    `json:"user,omitempty"`
	Defaults map[string]defaultChange `json:"defaults,omitempty"`
}

type defaultChange struct {
	Enabled *bool              `json:"enabled,omitempty"`
	Actions *[]json.RawMessage `json:"actions,omitempty"`
}

func (d *pushDelta) empty() bool {
	for _, rs := range d.User {
		if len(rs) > 0 {
			return false
		}
	}
	return len(d.Defaults) == 0
}

func (d *pushDelta) clone() *pushDelta {
	raw, _ := json.Marshal(d)
	var c pushDelta
	_ = json.Unmarshal(raw, &c)
	if c.User == nil {
		c.User = map[string][]PushRule{}
	}
	if c.Defaults == nil {
		c.Defaults = map[string]defaultChange{}
	}
	return &c
}

// pushState is a user's push rules in memory.
type pushState struct {
	delta    *pushDelta
	rendered json.RawMessage // {"global": rules}
	// rules is built from rendered when first needed (most users keep
	// the defaults and never need it parsed).
	once  sync.Once
	rules Ruleset
	err   error
	// compiled is the rules in the evaluator's form (see CompiledPushRules),
	// built once per version of the rules: a change makes a new pushState.
	compileOnce sync.Once
	compiled    any
	compileErr  error
}

// ruleset parses the rendered rules once.
func (st *pushState) ruleset() (Ruleset, error) {
	st.once.Do(func() {
		var wrapped struct {
			Global Ruleset `json:"global"`
		}
		st.err = json.Unmarshal(st.rendered, &wrapped)
		st.rules = wrapped.Global
	})
	return st.rules, st.err
}

// The default rules rendered once for a placeholder user: a user without
// rules of their own gets them by replacing the placeholder, without
// building and encoding the rules again.
const (
	placeholderLocalpart = "haven-push-placeholder-7f3a"
	placeholderUserID    = "@" + placeholderLocalpart + ":haven.invalid"
)

var (
	defaultRenderedOnce sync.Once
	defaultRenderedTmpl string
)

func defaultRendered(userID string) (json.RawMessage, error) {
	defaultRenderedOnce.Do(func() {
		if st, err := buildPushState(placeholderUserID, &pushDelta{}); err == nil {
			defaultRenderedTmpl = string(st.rendered)
		}
	})
	localpart, _, ok := SplitUserID(userID)
	if defaultRenderedTmpl == "" || !ok {
		st, err := buildPushState(userID, &pushDelta{})
		if err != nil {
			return nil, err
		}
		return st.rendered, nil
	}
	out := strings.ReplaceAll(defaultRenderedTmpl, placeholderUserID, jsonStringBody(userID))
	out = strings.ReplaceAll(out, placeholderLocalpart, jsonStringBody(localpart))
	return json.RawMessage(out), nil
}

func buildPushState(userID string, d *pushDelta) (*pushState, error) {
	defs, err := DefaultPushRules(userID)
	if err != nil {
		return nil, err
	}
	for _, kind := range PushRuleKinds {
		list := defs.Kind(kind)
		for i := range *list {
			r := &(*list)[i]
			ch, ok := d.Defaults[kind+"/"+r.RuleID]
			if !ok {
				continue
			}
			if ch.Enabled != nil {
				r.Enabled = *ch.Enabled
			}
			if ch.Actions != nil {
				r.Actions = *ch.Actions
			}
		}
	}
	user := func(kind string) []PushRule { return d.User[kind] }
	rs := Ruleset{
		Override:  concat(defs.Override[:1], user("override"), defs.Override[1:]),
		Content:   concat(user("content"), defs.Content),
		Room:      concat(user("room")),
		Sender:    concat(user("sender")),
		Underride: concat(user("underride"), defs.Underride),
	}
	rendered, err := json.Marshal(map[string]Ruleset{"global": rs})
	if err != nil {
		return nil, fmt.Errorf("encode push rules of %s: %w", userID, err)
	}
	st := &pushState{delta: d, rendered: rendered}
	st.once.Do(func() { st.rules = rs })
	return st, nil
}

func concat(parts ...[]PushRule) []PushRule {
	out := []PushRule{}
	for _, p := range parts {
		for _, r := range p {
			if r.Actions == nil {
				r.Actions = []json.RawMessage{}
			}
			out = append(out, r)
		}
	}
	return out
}

// loadPushState returns the user's push rules; the caller may hold the user's lock (locked).
func (s *Service) loadPushState(ctx context.Context, userID string, locked bool) (*pushState, error) {
	if st, ok := s.pushRules.Get(userID); ok {
		return st, nil
	}
	if !locked {
		unlock := s.userLocks.Lock(userID)
		defer unlock()
		if st, ok := s.pushRules.Peek(userID); ok {
			return st, nil
		}
	}
	var raw string
	d := &pushDelta{}
	err := s.db.QueryRow(ctx, `SELECT rules FROM push_rules WHERE user_id = $1`, userID).Scan(&raw)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("select push rules of %s: %w", userID, err)
	default:
		if err := json.Unmarshal([]byte(raw), d); err != nil {
			return nil, fmt.Errorf("decode push rules of %s: %w", userID, err)
		}
	}
	var st *pushState
	if d.empty() {
		rendered, err := defaultRendered(userID)
		if err != nil {
			return nil, err
		}
		st = &pushState{delta: d, rendered: rendered}
	} else if st, err = buildPushState(userID, d); err != nil {
		return nil, err
	}
	s.pushRules.Put(userID, st)
	return st, nil
}

// PushRules returns the user's whole push ruleset as {"global": {...}}, the
// body of GET /pushrules/ and the content of the m.push_rules account data.
func (s *Service) PushRules(ctx context.Context, userID string) (json.RawMessage, error) {
	st, err := s.loadPushState(ctx, userID, false)
	if err != nil {
		return nil, err
	}
	return st.rendered, nil
}

// PushRuleset returns the user's global ruleset, for evaluating rules.
func (s *Service) PushRuleset(ctx context.Context, userID string) (Ruleset, error) {
	st, err := s.loadPushState(ctx, userID, false)
	if err != nil {
		return Ruleset{}, err
	}
	return st.ruleset()
}

// CompiledPushRules returns the user's push rules as compile turns them
// into an evaluator's form. The result is kept with the rules and built once
// per version of them: a change of the user's rules (here, or in another
// process through the invalidation topic) makes the next call compile again.
// Every caller must pass the same compile function.
func (s *Service) CompiledPushRules(ctx context.Context, userID string, compile func(userID string, rs Ruleset) (any, error)) (any, error) {
	st, err := s.loadPushState(ctx, userID, false)
	if err != nil {
		return nil, err
	}
	st.compileOnce.Do(func() {
		rs, err := st.ruleset()
		if err != nil {
			st.compileErr = err
			return
		}
		st.compiled, st.compileErr = compile(userID, rs)
	})
	return st.compiled, st.compileErr
}

func checkKind(kind string) error {
	if !slices.Contains(PushRuleKinds, kind) {
		return merr.InvalidParam("Unknown push rule kind %q: use override, content, room, sender or underride", kind)
	}
	return nil
}

func findRule(list []PushRule, ruleID string) int {
	for i, r := range list {
		if r.RuleID == ruleID {
			return i
		}
	}
	return -1
}

// PushRulesOfKind returns the user's rules of one kind, in priority order.
func (s *Service) PushRulesOfKind(ctx context.Context, userID, kind string) ([]PushRule, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	rs, err := s.PushRuleset(ctx, userID)
	if err != nil {
		return nil, err
	}
	return *rs.Kind(kind), nil
}

// GetPushRule returns one rule, or M_NOT_FOUND.
func (s *Service) GetPushRule(ctx context.Context, userID, kind, ruleID string) (PushRule, error) {
	list, err := s.PushRulesOfKind(ctx, userID, kind)
	if err != nil {
		return PushRule{}, err
	}
	if i := findRule(list, ruleID); i >= 0 {
		return list[i], nil
	}
	return PushRule{}, merr.NotFound("The push rule was not found")
}

// PushRuleInput is the body of PUT /pushrules/global/{kind}/{ruleId}.
// Conditions nil means none given.
type PushRuleInput struct {
	Actions    []json.RawMessage
	Conditions []json.RawMessage
	Pattern    *string
}

// ValidPushActions checks a list of push rule actions.
func ValidPushActions(actions []json.RawMessage) error {
	for _, a := range actions {
		a = bytes.TrimSpace(a)
		var str string
		if len(a) > 0 && a[0] == '"' && json.Unmarshal(a, &str) == nil {
			switch str {
			case "notify", "dont_notify", "coalesce":
				continue
			}
			return merr.InvalidParam("Unknown push rule action %q", str)
		}
		var obj map[string]json.RawMessage
		if len(a) == 0 || a[0] != '{' || json.Unmarshal(a, &obj) != nil {
			return merr.BadJSON("A push rule action must be a string or an object")
		}
		var tweak string
		if json.Unmarshal(obj["set_tweak"], &tweak) != nil || tweak == "" {
			return merr.InvalidParam("A push rule action object must have a set_tweak string")
		}
	}
	return nil
}

func validConditions(conds []json.RawMessage) error {
	for _, c := range conds {
		var obj map[string]json.RawMessage
		c = bytes.TrimSpace(c)
		if len(c) == 0 || c[0] != '{' || json.Unmarshal(c, &obj) != nil {
			return merr.BadJSON("A push rule condition must be an object")
		}
		var kind string
		if json.Unmarshal(obj["kind"], &kind) != nil || kind == "" {
			return merr.BadJSON("A push rule condition must have a kind string")
		}
	}
	return nil
}

func validUserRuleID(ruleID string) error {
	switch {
	case ruleID == "":
		return merr.InvalidParam("The push rule ID must not be empty")
	case strings.HasPrefix(ruleID, "."):
		return merr.InvalidParam("Push rule IDs starting with '.' are reserved for server-default rules")
	case strings.ContainsAny(ruleID, "/\\"):
		return merr.InvalidParam("Push rule IDs must not contain '/' or '\\'")
	case len(ruleID) > MaxPushRuleIDBytes:
		return merr.InvalidParam("The push rule ID is longer than %d bytes", MaxPushRuleIDBytes)
	}
	return nil
}

func compactRaw(list []json.RawMessage) []json.RawMessage {
	out := make([]json.RawMessage, len(list))
	for i, m := range list {
		var b bytes.Buffer
		if json.Compact(&b, m) == nil {
			out[i] = json.RawMessage(b.Bytes())
		} else {
			out[i] = m
		}
	}
	return out
}

// PutPushRule creates or replaces a user-defined rule. before/after place
// it relative to another user-defined rule of the same kind (before wins if
// both are given); without them a new rule becomes the most important of its
// kind and an existing one keeps its place.
func (s *Service) PutPushRule(ctx context.Context, userID, kind, ruleID, before, after string, in PushRuleInput) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if err := validUserRuleID(ruleID); err != nil {
		return err
	}
	if in.Actions == nil {
		return merr.MissingParam("Missing actions")
	}
	if err := ValidPushActions(in.Actions); err != nil {
		return err
	}
	rule := PushRule{RuleID: ruleID, Enabled: true, Actions: compactRaw(in.Actions)}
	switch kind {
	case "content":
		if in.Pattern == nil || *in.Pattern == "" {
			return merr.MissingParam("A content rule needs a pattern")
		}
		p := *in.Pattern
		rule.Pattern = &p
	case "override", "underride":
		conds := in.Conditions
		if conds == nil {
			conds = []json.RawMessage{}
		}
		if err := validConditions(conds); err != nil {
			return err
		}
		c := compactRaw(conds)
		rule.Conditions = &c
	}
	rel := before
	if rel == "" {
		rel = after
	}
	return s.mutatePushRules(ctx, userID, func(d *pushDelta) error {
		list := slices.Clone(d.User[kind])
		idx := findRule(list, ruleID)
		if idx >= 0 {
			rule.Enabled = list[idx].Enabled
		}
		switch {
		case rel != "":
			if strings.HasPrefix(rel, ".") {
				return merr.InvalidParam("A rule cannot be placed relative to a server-default rule")
			}
			if idx >= 0 {
				list = slices.Delete(list, idx, idx+1)
			}
			j := findRule(list, rel)
			if j < 0 {
				return merr.Unknown("before/after rule not found: %s", rel)
			}
			if before == "" {
				j++
			}
			list = slices.Insert(list, j, rule)
		case idx >= 0:
			list[idx] = rule
		default:
			list = slices.Insert(list, 0, rule)
		}
		d.User[kind] = list
		total := 0
		for _, l := range d.User {
			total += len(l)
		}
		if total > MaxUserPushRules {
			return merr.Custom(400, "M_RESOURCE_LIMIT_EXCEEDED", "You have %d push rules, the most allowed", MaxUserPushRules)
		}
		return nil
	})
}

// DeletePushRule deletes a user-defined rule. Server-default rules cannot
// be deleted (they can be disabled); like an unknown rule that is M_NOT_FOUND,
// the only error the spec lists for this endpoint.
func (s *Service) DeletePushRule(ctx context.Context, userID, kind, ruleID string) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if strings.HasPrefix(ruleID, ".") {
		if _, err := s.GetPushRule(ctx, userID, kind, ruleID); err != nil {
			return err
		}
		return merr.NotFound("Server-default push rules cannot be deleted; disable them instead")
	}
	return s.mutatePushRules(ctx, userID, func(d *pushDelta) error {
		list := d.User[kind]
		i := findRule(list, ruleID)
		if i < 0 {
			return merr.NotFound("The push rule was not found")
		}
		d.User[kind] = slices.Delete(slices.Clone(list), i, i+1)
		if len(d.User[kind]) == 0 {
			delete(d.User, kind)
		}
		return nil
	})
}

// SetPushRuleEnabled enables or disables any rule, server-default ones included.
func (s *Service) SetPushRuleEnabled(ctx context.Context, userID, kind, ruleID string, enabled bool) error {
	return s.changeRule(ctx, userID, kind, ruleID, func(r *PushRule, ch *defaultChange) {
		if ch != nil {
			ch.Enabled = &enabled
		} else {
			r.Enabled = enabled
		}
	})
}

// SetPushRuleActions replaces the actions of any rule, server-default ones included.
func (s *Service) SetPushRuleActions(ctx context.Context, userID, kind, ruleID string, actions []json.RawMessage) error {
	if actions == nil {
		return merr.MissingParam("Missing actions")
	}
	if err := ValidPushActions(actions); err != nil {
		return err
	}
	actions = compactRaw(actions)
	return s.changeRule(ctx, userID, kind, ruleID, func(r *PushRule, ch *defaultChange) {
		if ch != nil {
			a := slices.Clone(actions)
			ch.Actions = &a
		} else {
			r.Actions = slices.Clone(actions)
		}
	})
}

// changeRule applies fn to a user rule (ch nil) or to the change record of a
// server-default rule.
func (s *Service) changeRule(ctx context.Context, userID, kind, ruleID string, fn func(r *PushRule, ch *defaultChange)) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	return s.mutatePushRules(ctx, userID, func(d *pushDelta) error {
		if strings.HasPrefix(ruleID, ".") {
			defs, err := DefaultPushRules(userID)
			if err != nil {
				return err
			}
			if findRule(*defs.Kind(kind), ruleID) < 0 {
				return merr.NotFound("The push rule was not found")
			}
			key := kind + "/" + ruleID
			ch := d.Defaults[key]
			fn(nil, &ch)
			d.Defaults[key] = ch
			return nil
		}
		list := slices.Clone(d.User[kind])
		i := findRule(list, ruleID)
		if i < 0 {
			return merr.NotFound("The push rule was not found")
		}
		fn(&list[i], nil)
		d.User[kind] = list
		return nil
	})
}

// normalise drops default changes that change nothing, so that a user back
// on the defaults has no stored row.
func normalise(userID string, d *pushDelta) error {
	defs, err := DefaultPushRules(userID)
	if err != nil {
		return err
	}
	for key, ch := range d.Defaults {
		kind, id, _ := strings.Cut(key, "/")
		list := defs.Kind(kind)
		i := -1
		if list != nil {
			i = findRule(*list, id)
		}
		if i < 0 {
			delete(d.Defaults, key)
			continue
		}
		def := (*list)[i]
		if ch.Enabled != nil && *ch.Enabled == def.Enabled {
			ch.Enabled = nil
		}
		if ch.Actions != nil {
			a, _ := json.Marshal(*ch.Actions)
			b, _ := json.Marshal(def.Actions)
			if bytes.Equal(a, b) {
				ch.Actions = nil
			}
		}
		if ch.Enabled == nil && ch.Actions == nil {
			delete(d.Defaults, key)
		} else {
			d.Defaults[key] = ch
		}
	}
	for k, l := range d.User {
		if len(l) == 0 {
			delete(d.User, k)
		}
	}
	return nil
}

// mutatePushRules changes the user's push rules under the user's lock,
// stores them and publishes m.push_rules on the account data stream.
func (s *Service) mutatePushRules(ctx context.Context, userID string, fn func(d *pushDelta) error) error {
	unlock := s.userLocks.Lock(userID)
	defer unlock()
	st, err := s.loadPushState(ctx, userID, true)
	if err != nil {
		return err
	}
	d := st.delta.clone()
	if err := fn(d); err != nil {
		return err
	}
	if err := normalise(userID, d); err != nil {
		return err
	}
	next, err := buildPushState(userID, d)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode push rules of %s: %w", userID, err)
	}
	err = s.writeAccountData(ctx, userID, "", TypePushRules, func(tx *storage.Tx, pos int64) error {
		if d.empty() {
			if _, err := tx.Exec(ctx, `DELETE FROM push_rules WHERE user_id = $1`, userID); err != nil {
				return fmt.Errorf("delete push rules of %s: %w", userID, err)
			}
		} else if _, err := tx.Exec(ctx, `INSERT INTO push_rules (user_id, rules) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET rules = excluded.rules`, userID, string(raw)); err != nil {
			return fmt.Errorf("upsert push rules of %s: %w", userID, err)
		}
		// The stream entry marks the change; readers get the ruleset itself
		// from PushRules, so it is stored once, in push_rules.
		return upsertAccountData(ctx, tx, userID, "", TypePushRules, "{}", pos)
	})
	if err != nil {
		s.pushRules.Remove(userID)
		return err
	}
	s.pushRules.Put(userID, next)
	s.broadcast(ctx, invalidation{PushRules: userID})
	return nil
}
