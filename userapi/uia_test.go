package userapi

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// uiaStep runs CheckUIA and returns the session ID of a challenge ("" if done).
func uiaStep(t *testing.T, s *Service, req UIARequest) (string, *merr.Error) {
	t.Helper()
	err := s.CheckUIA(context.Background(), req)
	if err == nil {
		return "", nil
	}
	me, ok := merr.As(err)
	if !ok {
		t.Fatalf("CheckUIA: %v", err)
	}
	sid, _ := me.Extra["session"].(string)
	return sid, me
}

func TestUIA(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clk := &clock{t: time.Unix(1_700_000_000, 0)}
		s := newTestService(t, db, nil, func(o *Options) { o.Now = clk.Now })
		alice := mustRegister(t, s, "alice", "pw")
		mustRegister(t, s, "bob", "bobpw")
		op := UIARequest{Op: "delete_devices", UserID: alice.UserID, Flows: PasswordFlows()}

		// First call: the challenge, without errcode in the body.
		sid, me := uiaStep(t, s, op)
		if sid == "" || me == nil || !IsUIAChallenge(me) {
			t.Fatalf("first step %v", me)
		}
		body := UIABody(me)
		raw, _ := json.Marshal(body)
		if string(raw) != fmt.Sprintf(`{"flows":[{"stages":["m.login.password"]}],"params":{},"session":%q}`, sid) {
			t.Fatalf("challenge body %s", raw)
		}

		withAuth := func(auth string) UIARequest {
			r := op
			r.Auth = json.RawMessage(auth)
			return r
		}
		// Wrong password: 401 with errcode, same session.
		sid2, me := uiaStep(t, s, withAuth(fmt.Sprintf(`{"type":"m.login.password","session":%q,"identifier":{"type":"m.id.user","user":"alice"},"password":"nope"}`, sid)))
		if me == nil || me.Status != 401 || me.Code != "M_FORBIDDEN" || sid2 != sid || IsUIAChallenge(me) {
			t.Fatalf("wrong password step %v %q", me, sid2)
		}
		if c, ok := me.Extra["completed"].([]string); !ok || len(c) != 0 || me.Extra["flows"] == nil || me.Extra["params"] == nil {
			t.Fatalf("a failed attempt's body has no completed list, flows and params: %v", me.Extra)
		}
		// Bob's password does not authorise Alice.
		_, me = uiaStep(t, s, withAuth(fmt.Sprintf(`{"type":"m.login.password","session":%q,"identifier":{"type":"m.id.user","user":"bob"},"password":"bobpw"}`, sid)))
		if me == nil || me.Code != "M_FORBIDDEN" {
			t.Fatalf("other user's password accepted: %v", me)
		}
		// A stage not offered.
		_, me = uiaStep(t, s, withAuth(fmt.Sprintf(`{"type":"m.login.dummy","session":%q}`, sid)))
		if me == nil || me.Status != 401 || me.Code != "M_UNRECOGNIZED" {
			t.Fatalf("dummy on a password flow: %v", me)
		}
		// The session cannot authorise another operation.
		other := withAuth(fmt.Sprintf(`{"type":"m.login.password","session":%q,"user":"alice","password":"pw"}`, sid))
		other.Op = "deactivate"
		_, me = uiaStep(t, s, other)
		if me == nil || me.Code != "M_FORBIDDEN" || me.Status != 403 {
			t.Fatalf("session reused for another op: %v", me)
		}
		// Right password (legacy user field): done, and the session is used up.
		_, me = uiaStep(t, s, withAuth(fmt.Sprintf(`{"type":"m.login.password","session":%q,"user":"@alice:test.local","password":"pw"}`, sid)))
		if me != nil {
			t.Fatalf("right password: %v", me)
		}
		_, me = uiaStep(t, s, withAuth(fmt.Sprintf(`{"type":"m.login.password","session":%q,"password":"pw"}`, sid)))
		if me == nil || me.Code != "M_UNKNOWN" {
			t.Fatalf("used session accepted again: %v", me)
		}
		// Auth without a session works in one step (clients send it directly).
		if _, me := uiaStep(t, s, withAuth(`{"type":"m.login.password","password":"pw"}`)); me != nil {
			t.Fatalf("one-step auth: %v", me)
		}
		// Bad auth types.
		if _, me := uiaStep(t, s, withAuth(`{"type":5}`)); me == nil || me.Code != "M_BAD_JSON" {
			t.Fatalf("bad auth: %v", me)
		}
		if _, me := uiaStep(t, s, withAuth(`"str"`)); me == nil || me.Code != "M_BAD_JSON" {
			t.Fatalf("string auth: %v", me)
		}

		// Sessions expire.
		sid, _ = uiaStep(t, s, op)
		clk.Add(UIASessionLifetime + time.Second)
		_, me = uiaStep(t, s, withAuth(fmt.Sprintf(`{"type":"m.login.password","session":%q,"password":"pw"}`, sid)))
		if me == nil || me.Code != "M_UNKNOWN" {
			t.Fatalf("expired session: %v", me)
		}

		// Multi-stage flows remember completed stages.
		multi := UIARequest{Op: "x", UserID: alice.UserID, Flows: [][]string{{StageDummy, StagePassword}}}
		sid, _ = uiaStep(t, s, multi)
		multi.Auth = json.RawMessage(fmt.Sprintf(`{"type":"m.login.dummy","session":%q}`, sid))
		_, me = uiaStep(t, s, multi)
		if me == nil || !IsUIAChallenge(me) || fmt.Sprint(me.Extra["completed"]) != "[m.login.dummy]" {
			t.Fatalf("after the first stage: %v %v", me, me.Extra)
		}
		multi.Auth = json.RawMessage(fmt.Sprintf(`{"type":"m.login.password","session":%q,"password":"pw"}`, sid))
		if _, me := uiaStep(t, s, multi); me != nil {
			t.Fatalf("after both stages: %v", me)
		}

		// Registration offers the dummy stage (no tokens configured) and
		// refuses the token stage.
		reg := UIARequest{Op: "register", Flows: s.RegistrationFlows()}
		if fmt.Sprint(reg.Flows) != "[[m.login.dummy]]" {
			t.Fatalf("registration flows %v", reg.Flows)
		}
		reg.Auth = json.RawMessage(`{"type":"m.login.dummy"}`)
		if _, me := uiaStep(t, s, reg); me != nil {
			t.Fatalf("dummy registration: %v", me)
		}
		if ok, err := s.RegistrationTokenValid(ctx, "abc"); ok || err != nil {
			t.Fatalf("token valid %v %v", ok, err)
		}
	})
}

type fixedTokens map[string]bool

func (f fixedTokens) ValidRegistrationToken(ctx context.Context, token string) (bool, error) {
	return f[token], nil
}

func (f fixedTokens) ReserveRegistrationToken(ctx context.Context, token string) (bool, error) {
	return f[token], nil
}

func (f fixedTokens) FinishRegistrationToken(ctx context.Context, token string, registered bool) error {
	return nil
}

func TestUIARegistrationToken(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestService(t, db, nil, func(o *Options) { o.RegistrationTokens = fixedTokens{"good": true}; o.RequireRegistrationToken = true })
		reg := UIARequest{Op: "register", Flows: s.RegistrationFlows()}
		if fmt.Sprint(reg.Flows) != "[[m.login.registration_token]]" {
			t.Fatalf("flows %v", reg.Flows)
		}
		reg.Auth = json.RawMessage(`{"type":"m.login.registration_token","token":"bad"}`)
		if _, me := uiaStep(t, s, reg); me == nil || me.Code != "M_FORBIDDEN" || me.Status != 401 {
			t.Fatalf("bad token: %v", me)
		}
		reg.Auth = json.RawMessage(`{"type":"m.login.registration_token","token":"good"}`)
		if _, me := uiaStep(t, s, reg); me != nil {
			t.Fatalf("good token: %v", me)
		}
	})
}

// opParams are the parameters of a test operation.
type opParams struct {
	Name  string `json:"name,omitempty"`
	Count int    `json:"count,omitempty"`
}

// TestUIAParams: the first request of a session that gives parameters fixes
// them; later requests get them whatever they send; a request refused by
// the check neither fixes its parameters nor uses up the session.
func TestUIAParams(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestService(t, db, nil)
		step := func(sid string, in opParams, auth string) (opParams, string, *merr.Error) {
			t.Helper()
			p := in
			req := UIARequest{Op: "register", Flows: s.RegistrationFlows(), Params: &p, Check: func() error {
				if p.Name == "bad" {
					return merr.InvalidParam("bad name")
				}
				return nil
			}}
			if auth != "" {
				req.Auth = json.RawMessage(fmt.Sprintf(`{"type":%q,"session":%q}`, auth, sid))
			}
			got, me := uiaStep(t, s, req)
			return p, got, me
		}
		// A first request without parameters does not fix them.
		_, sid, me := step("", opParams{}, "")
		if sid == "" || me.Extra["completed"] != nil {
			t.Fatalf("first challenge: %v", me)
		}
		// Refused by the check: nothing kept, the session still open.
		if _, _, me = step(sid, opParams{Name: "bad"}, "m.login.nothing"); me == nil || me.Code != "M_INVALID_PARAM" {
			t.Fatalf("check: %v", me)
		}
		if _, _, me = step(sid, opParams{Name: "first", Count: 1}, "m.login.nothing"); me == nil || me.Code != "M_UNRECOGNIZED" {
			t.Fatalf("unoffered stage: %v", me)
		}
		// Fixed now: another request cannot change them, one without gets them.
		if p, _, _ := step(sid, opParams{Name: "second"}, "m.login.nothing"); p != (opParams{Name: "first", Count: 1}) {
			t.Errorf("changed parameters: %+v", p)
		}
		p, _, me := step(sid, opParams{}, StageDummy)
		if me != nil || p != (opParams{Name: "first", Count: 1}) {
			t.Fatalf("completed with %+v: %v", p, me)
		}
		// A session whose first request gives parameters keeps those.
		_, sid, _ = step("", opParams{Name: "third"}, "")
		if p, _, me := step(sid, opParams{Name: "fourth", Count: 4}, StageDummy); me != nil || p != (opParams{Name: "third"}) {
			t.Fatalf("completed with %+v: %v", p, me)
		}
	})
}
