package clientapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
)

// maxPushRuleBody bounds the body of a push rule change.
const maxPushRuleBody = 64 << 10

// The push rule endpoints share one path tree below /pushrules/, parsed by
// parsePushRulePath rather than by the router: a malformed path (no or an
// unknown scope, a missing kind, rule ID or trailing slash, an unknown
// attribute) is a 400, as the spec's reference server answers, not the
// router's 404 or 405.
func (a *API) pushRuleRoutes() []Route {
	base := v3 + "/pushrules"
	var out []Route
	for _, m := range []struct {
		method string
		h      httpx.HandlerFunc
	}{{"GET", a.getPushRules}, {"PUT", a.putPushRules}, {"DELETE", a.deletePushRules}} {
		out = append(out,
			Route{Method: m.method, Path: base, H: noTrailingSlash, Auth: authUser},
			Route{Method: m.method, Path: base + "/*", H: m.h, Auth: authUser})
	}
	return out
}

// badRulePath is the 400 of a malformed push rule path.
func badRulePath(format string, args ...any) error {
	return merr.Custom(http.StatusBadRequest, "M_UNRECOGNIZED", format, args...)
}

func noTrailingSlash(w http.ResponseWriter, r *http.Request) error {
	return badRulePath("Unrecognized request: the push rule paths end in a slash (/pushrules/, /pushrules/global/)")
}

// pushRulePath is a path below /pushrules/: "" (every rule), "global/",
// "global/{kind}/", "global/{kind}/{ruleId}" or
// "global/{kind}/{ruleId}/{attr}".
type pushRulePath struct {
	all bool // "": the rules of every scope
	// kind "" is the global ruleset; ruleID "" the kind's list of rules.
	kind, ruleID string
	attr         string // "enabled" or "actions"; "" for the rule itself
}

// rule tells whether the path names one rule (or one of its attributes).
func (p pushRulePath) rule() error {
	if p.all || p.kind == "" || p.ruleID == "" {
		return badRulePath("The path must name a push rule: /pushrules/global/{kind}/{ruleId}")
	}
	return nil
}

// wildcardSegments splits what a route's "*" matched into its
// percent-decoded segments. The router matched the escaped path when the
// request had one, the decoded path otherwise.
func wildcardSegments(r *http.Request) []string {
	segs := strings.Split(chi.URLParam(r, "*"), "/")
	if r.URL.RawPath != "" {
		for i, s := range segs {
			if v, err := url.PathUnescape(s); err == nil {
				segs[i] = v
			}
		}
	}
	return segs
}

func parsePushRulePath(r *http.Request) (pushRulePath, error) {
	segs := wildcardSegments(r)
	switch {
	case len(segs) == 1 && segs[0] == "":
		return pushRulePath{all: true}, nil
	case segs[0] == "":
		return pushRulePath{}, badRulePath("Missing push rule scope: use global")
	case segs[0] != "global":
		return pushRulePath{}, badRulePath("Unknown push rule scope %q: use global", segs[0])
	case len(segs) == 1:
		return pushRulePath{}, badRulePath("Unrecognized request: the global ruleset is /pushrules/global/, with a trailing slash")
	case len(segs) == 2 && segs[1] == "":
		return pushRulePath{}, nil
	case segs[1] == "":
		return pushRulePath{}, badRulePath("Missing push rule kind")
	case len(segs) == 2:
		return pushRulePath{}, badRulePath("Unrecognized request: the rules of a kind are /pushrules/global/%s/, with a trailing slash", segs[1])
	}
	p := pushRulePath{kind: segs[1], ruleID: segs[2]}
	switch {
	case len(segs) == 3:
		return p, nil
	case p.ruleID == "":
		return pushRulePath{}, badRulePath("Missing push rule ID")
	case len(segs) == 4 && (segs[3] == "enabled" || segs[3] == "actions"):
		p.attr = segs[3]
		return p, nil
	case len(segs) == 4:
		return pushRulePath{}, badRulePath("Unknown push rule attribute %q: use enabled or actions", segs[3])
	}
	return pushRulePath{}, badRulePath("Unrecognized push rule path")
}

func (a *API) getPushRules(w http.ResponseWriter, r *http.Request) error {
	p, err := parsePushRulePath(r)
	if err != nil {
		return err
	}
	ctx, userID := r.Context(), DeviceFrom(r).UserID
	switch {
	case p.all:
		body, err := a.Users.PushRules(ctx, userID)
		if err != nil {
			return err
		}
		return httpx.RawJSON(w, http.StatusOK, body)
	case p.kind == "":
		rs, err := a.Users.PushRuleset(ctx, userID)
		if err != nil {
			return err
		}
		return httpx.JSON(w, http.StatusOK, rs)
	case p.ruleID == "":
		list, err := a.Users.PushRulesOfKind(ctx, userID, p.kind)
		if err != nil {
			return err
		}
		return httpx.JSON(w, http.StatusOK, list)
	}
	rule, err := a.Users.GetPushRule(ctx, userID, p.kind, p.ruleID)
	if err != nil {
		return err
	}
	switch p.attr {
	case "enabled":
		return httpx.JSON(w, http.StatusOK, map[string]bool{"enabled": rule.Enabled})
	case "actions":
		return httpx.JSON(w, http.StatusOK, map[string]any{"actions": rule.Actions})
	}
	return httpx.JSON(w, http.StatusOK, rule)
}

func (a *API) putPushRules(w http.ResponseWriter, r *http.Request) error {
	p, err := parsePushRulePath(r)
	if err != nil {
		return err
	}
	if err := p.rule(); err != nil {
		return err
	}
	ctx, userID := r.Context(), DeviceFrom(r).UserID
	switch p.attr {
	case "enabled":
		var req struct {
			Enabled *bool `json:"enabled"`
		}
		if err := httpx.DecodeJSON(r, &req, maxSmallBody); err != nil {
			return err
		}
		if req.Enabled == nil {
			return merr.MissingParam("Missing enabled")
		}
		err = a.Users.SetPushRuleEnabled(ctx, userID, p.kind, p.ruleID, *req.Enabled)
	case "actions":
		var req struct {
			Actions []json.RawMessage `json:"actions"`
		}
		if err := httpx.DecodeJSON(r, &req, maxPushRuleBody); err != nil {
			return err
		}
		err = a.Users.SetPushRuleActions(ctx, userID, p.kind, p.ruleID, req.Actions)
	default:
		var req struct {
			Actions    []json.RawMessage `json:"actions"`
			Conditions []json.RawMessage `json:"conditions"`
			Pattern    *string           `json:"pattern"`
		}
		if err := httpx.DecodeJSON(r, &req, maxPushRuleBody); err != nil {
			return err
		}
		q := r.URL.Query()
		err = a.Users.PutPushRule(ctx, userID, p.kind, p.ruleID, q.Get("before"), q.Get("after"),
			userapi.PushRuleInput{Actions: req.Actions, Conditions: req.Conditions, Pattern: req.Pattern})
	}
	if err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) deletePushRules(w http.ResponseWriter, r *http.Request) error {
	p, err := parsePushRulePath(r)
	if err != nil {
		return err
	}
	if err := p.rule(); err != nil {
		return err
	}
	if p.attr != "" {
		return badRulePath("A push rule's %s cannot be deleted; delete the rule or change its %s", p.attr, p.attr)
	}
	if err := a.Users.DeletePushRule(r.Context(), DeviceFrom(r).UserID, p.kind, p.ruleID); err != nil {
		return err
	}
	return httpx.OK(w)
}
