package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/userapi"
)

// maxPushRuleBody bounds the body of a push rule change.
const maxPushRuleBody = 64 << 10

func (a *API) pushRuleRoutes() []Route {
	rule := v3 + "/pushrules/global/{kind}/{ruleId}"
	return []Route{
		{Method: "GET", Path: v3 + "/pushrules/", H: a.getAllPushRules, Auth: authUser},
		{Method: "GET", Path: v3 + "/pushrules", H: a.getAllPushRules, Auth: authUser},
		{Method: "GET", Path: v3 + "/pushrules/global/", H: a.getGlobalPushRules, Auth: authUser},
		{Method: "GET", Path: v3 + "/pushrules/global", H: a.getGlobalPushRules, Auth: authUser},
		{Method: "GET", Path: rule, H: a.getPushRule, Auth: authUser},
		{Method: "PUT", Path: rule, H: a.putPushRule, Auth: authUser},
		{Method: "DELETE", Path: rule, H: a.deletePushRule, Auth: authUser},
		{Method: "GET", Path: rule + "/enabled", H: a.getPushRuleEnabled, Auth: authUser},
		{Method: "PUT", Path: rule + "/enabled", H: a.putPushRuleEnabled, Auth: authUser},
		{Method: "GET", Path: rule + "/actions", H: a.getPushRuleActions, Auth: authUser},
		{Method: "PUT", Path: rule + "/actions", H: a.putPushRuleActions, Auth: authUser},
	}
}

func (a *API) getAllPushRules(w http.ResponseWriter, r *http.Request) error {
	body, err := a.Users.PushRules(r.Context(), DeviceFrom(r).UserID)
	if err != nil {
		return err
	}
	return httpx.RawJSON(w, http.StatusOK, body)
}

func (a *API) getGlobalPushRules(w http.ResponseWriter, r *http.Request) error {
	rs, err := a.Users.PushRuleset(r.Context(), DeviceFrom(r).UserID)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, rs)
}

func ruleParams(r *http.Request) (kind, ruleID string) {
	return PathParam(r, "kind"), PathParam(r, "ruleId")
}

func (a *API) getPushRule(w http.ResponseWriter, r *http.Request) error {
	kind, id := ruleParams(r)
	rule, err := a.Users.GetPushRule(r.Context(), DeviceFrom(r).UserID, kind, id)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, rule)
}

func (a *API) putPushRule(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Actions    []json.RawMessage `json:"actions"`
		Conditions []json.RawMessage `json:"conditions"`
		Pattern    *string           `json:"pattern"`
	}
	if err := httpx.DecodeJSON(r, &req, maxPushRuleBody); err != nil {
		return err
	}
	kind, id := ruleParams(r)
	q := r.URL.Query()
	err := a.Users.PutPushRule(r.Context(), DeviceFrom(r).UserID, kind, id, q.Get("before"), q.Get("after"),
		userapi.PushRuleInput{Actions: req.Actions, Conditions: req.Conditions, Pattern: req.Pattern})
	if err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) deletePushRule(w http.ResponseWriter, r *http.Request) error {
	kind, id := ruleParams(r)
	if err := a.Users.DeletePushRule(r.Context(), DeviceFrom(r).UserID, kind, id); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) getPushRuleEnabled(w http.ResponseWriter, r *http.Request) error {
	kind, id := ruleParams(r)
	rule, err := a.Users.GetPushRule(r.Context(), DeviceFrom(r).UserID, kind, id)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]bool{"enabled": rule.Enabled})
}

func (a *API) putPushRuleEnabled(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Enabled *bool `json:"enabled"`
	}
	if err := httpx.DecodeJSON(r, &req, maxSmallBody); err != nil {
		return err
	}
	if req.Enabled == nil {
		return merr.MissingParam("Missing enabled")
	}
	kind, id := ruleParams(r)
	if err := a.Users.SetPushRuleEnabled(r.Context(), DeviceFrom(r).UserID, kind, id, *req.Enabled); err != nil {
		return err
	}
	return httpx.OK(w)
}

func (a *API) getPushRuleActions(w http.ResponseWriter, r *http.Request) error {
	kind, id := ruleParams(r)
	rule, err := a.Users.GetPushRule(r.Context(), DeviceFrom(r).UserID, kind, id)
	if err != nil {
		return err
	}
	return httpx.JSON(w, http.StatusOK, map[string]any{"actions": rule.Actions})
}

func (a *API) putPushRuleActions(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Actions []json.RawMessage `json:"actions"`
	}
	if err := httpx.DecodeJSON(r, &req, maxPushRuleBody); err != nil {
		return err
	}
	kind, id := ruleParams(r)
	if err := a.Users.SetPushRuleActions(r.Context(), DeviceFrom(r).UserID, kind, id, req.Actions); err != nil {
		return err
	}
	return httpx.OK(w)
}
