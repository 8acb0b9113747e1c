package userapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	auditlog "github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// UIA stage types.
const (
	StageDummy             = "m.login.dummy"
	StagePassword          = "m.login.password"
	StageRegistrationToken = "m.login.registration_token"
)

// UIASessionLifetime is how long a user-interactive auth session lasts.
const UIASessionLifetime = 15 * time.Minute

// UIARequest asks for user-interactive authentication of one operation.
type UIARequest struct {
	// Op names the operation ("register", "delete_devices", "password",
	// "deactivate"); a session only authorises the operation it began with.
	Op string
	// UserID is the user making the request ("" for registration). The
	// password stage checks this user's password.
	UserID string
	// DeviceID is the requesting device, when known: a device of the
	// OAuth 2.0 API is offered the m.oauth stage (uia_oauth.go).
	DeviceID string
	// Flows are the accepted lists of stages.
	Flows [][]string
	// Auth is the request's "auth" object, nil when absent.
	Auth json.RawMessage
	// Params, when set, points to the operation's parameters: a struct
	// that encodes to JSON with omitempty on every field, so that none
	// given encodes as {}. The spec has the server use the parameters of a
	// session's first request for the whole session: the first request
	// that gives some fixes them (they are stored with the session, so a
	// secret in them must be hashed by Check, from a field that is not
	// encoded), and on every later request of the session CheckUIA sets
	// Params to them, whatever that request sent.
	Params any
	// Check, when set, validates the effective Params. It runs before a
	// stage is tried and before new parameters are stored, so that a bad
	// request neither uses up the session nor fixes bad parameters.
	Check func() error
}

// uiaData is what a session stores.
type uiaData struct {
	Op        string          `json:"op"`
	Completed []string        `json:"completed"`
	Params    json.RawMessage `json:"params,omitempty"`
}

// authDict is the "auth" object of a request.
type authDict struct {
	Type       string `json:"type"`
	Session    string `json:"session"`
	Password   string `json:"password"`
	Token      string `json:"token"`
	User       string `json:"user"`
	Identifier *struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
	// ThreePIDCreds are m.login.email.identity's; older clients (Element
	// among them) send them as threepidCreds as well or instead.
	ThreePIDCreds *threePIDCreds `json:"threepid_creds"`
	ThreepidCreds *threePIDCreds `json:"threepidCreds"`
}

// creds returns the stage's threepid credentials in either spelling.
func (ad authDict) creds() *threePIDCreds {
	if ad.ThreePIDCreds != nil {
		return ad.ThreePIDCreds
	}
	return ad.ThreepidCreds
}

// parseCreds takes the threepid credentials from an "auth" object.
func parseCreds(auth []byte) *threePIDCreds {
	var ad authDict
	if json.Unmarshal(auth, &ad) != nil {
		return nil
	}
	return ad.creds()
}

// RegistrationFlows are the UIA flows of registration: a registration token
// when registration requires one, else the dummy stage.
func (s *Service) RegistrationFlows() [][]string {
	if s.opts.RegistrationTokens != nil && s.opts.RequireRegistrationToken {
		return [][]string{{StageRegistrationToken}}
	}
	return [][]string{{StageDummy}}
}

// RegistrationTokenValid answers GET .../m.login.registration_token/validity:
// false while registration tokens are not configured.
func (s *Service) RegistrationTokenValid(ctx context.Context, token string) (bool, error) {
	if s.opts.RegistrationTokens == nil || token == "" {
		return false, nil
	}
	return s.opts.RegistrationTokens.ValidRegistrationToken(ctx, token)
}

// FinishRegistrationToken ends the use of a registration token that the
// request's completed UIA (auth, the request's "auth" object) reserved:
// counted as completed when registered, else given back. It does nothing
// when the request did not pass the token stage.
func (s *Service) FinishRegistrationToken(ctx context.Context, auth json.RawMessage, registered bool) error {
	if s.opts.RegistrationTokens == nil || len(auth) == 0 {
		return nil
	}
	var ad authDict
	if json.Unmarshal(auth, &ad) != nil || ad.Type != StageRegistrationToken || ad.Token == "" {
		return nil
	}
	return s.opts.RegistrationTokens.FinishRegistrationToken(ctx, ad.Token, registered)
}

// PasswordFlows are the UIA flows of operations on an existing account.
func PasswordFlows() [][]string { return [][]string{{StagePassword}} }

// IsUIAChallenge tells whether err is the plain 401 that starts or continues
// UIA (no failed attempt). Its body is the UIA fields without errcode/error,
// as the spec shows it; see UIABody.
func IsUIAChallenge(err error) bool {
	me, ok := merr.As(err)
	return ok && me.Status == 401 && me.Code == "M_UNAUTHORIZED" && me.Extra["flows"] != nil
}

// UIABody is the response body of a UIA challenge: flows, params, session,
// completed.
func UIABody(err error) map[string]any {
	me, ok := merr.As(err)
	if !ok {
		return map[string]any{}
	}
	out := make(map[string]any, len(me.Extra))
	for k, v := range me.Extra {
		out[k] = v
	}
	return out
}

type uiaFlow struct {
	Stages []string `json:"stages"`
}

// challenge builds the 401 of a UIA step. completed is nil for the first
// challenge (the spec's first 401 has no completed list) and the stages
// done so far, maybe none, afterwards. fail, if set, is the failed
// attempt's error, whose errcode and message join the body.
func challenge(sessionID string, flows [][]string, completed []string, fail *merr.Error) error {
	return challengeWith(sessionID, flows, map[string]any{}, completed, fail)
}

// challengeWith is challenge with the stages' params.
func challengeWith(sessionID string, flows [][]string, params map[string]any, completed []string, fail *merr.Error) error {
	var e *merr.Error
	if fail != nil {
		e = merr.Custom(401, fail.Code, "%s", fail.Msg)
	} else {
		e = merr.Unauthorized("Additional authentication is required")
	}
	fl := make([]uiaFlow, len(flows))
	for i, f := range flows {
		fl[i] = uiaFlow{Stages: f}
	}
	e = e.With("flows", fl).With("params", params).With("session", sessionID)
	if completed != nil {
		e = e.With("completed", completed)
	}
	return e
}

// CheckUIA runs one step of user-interactive authentication. It returns nil
// once a flow is complete (the session is then used up), or a 401 error
// carrying the UIA body: the first challenge, the progress so far, or a
// failed attempt with its errcode. See UIARequest.Params for the
// parameters a session keeps.
func (s *Service) CheckUIA(ctx context.Context, req UIARequest) error {
	auth := bytes.TrimSpace(req.Auth)
	hasAuth := len(auth) > 0 && !bytes.Equal(auth, []byte("null"))
	var ad authDict
	if hasAuth {
		if err := json.Unmarshal(auth, &ad); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return merr.BadJSON("Field auth.%s has the wrong type", te.Field)
			}
			return merr.BadJSON("auth must be a JSON object")
		}
	}
	sessionID := ad.Session
	data := uiaData{Op: req.Op, Completed: []string{}}
	var err error
	if sessionID != "" {
		if data, err = s.loadUIASession(ctx, sessionID, req); err != nil {
			return err
		}
		if data.Params != nil && req.Params != nil {
			reflect.ValueOf(req.Params).Elem().SetZero()
			if err := json.Unmarshal(data.Params, req.Params); err != nil {
				return fmt.Errorf("decode parameters of auth session: %w", err)
			}
		}
	}
	if req.Flows, err = s.sensitiveFlows(ctx, req); err != nil {
		return err
	}
	if req.Flows, err = s.oauthFlows(ctx, req); err != nil {
		return err
	}
	params := s.uiaParams(req.Flows)
	challenge := func(sessionID string, flows [][]string, completed []string, fail *merr.Error) error {
		return challengeWith(sessionID, flows, params, completed, fail)
	}
	if req.Check != nil {
		if err := req.Check(); err != nil {
			return err
		}
	}
	fixed, err := fixParams(&data, req.Params)
	if err != nil {
		return err
	}
	switch {
	case sessionID == "":
		if sessionID, err = s.newUIASession(ctx, req.UserID, data); err != nil {
			return err
		}
	case fixed:
		if err := s.saveUIASession(ctx, sessionID, data); err != nil {
			return err
		}
	}
	if offered(req.Flows, StageOAuth) && (ad.Type == "" || isOAuthStage(ad.Type)) {
		// The m.oauth stage passes once the user approved the operation
		// on the account page; the retry may name the stage, send the
		// session alone or, as clients of other servers do, no auth.
		ok, err := s.takeApproval(ctx, req.UserID, req.Op)
		if err != nil {
			return err
		}
		switch {
		case ok:
			data.Completed = append(data.Completed, StageOAuth, StageOAuthUnstable)
			hasAuth, ad.Type = true, ""
		case hasAuth && ad.Type != "":
			return challenge(sessionID, req.Flows, data.Completed, merr.Forbidden("Approve this on your account page (the link your app opens), then try again"))
		}
	}
	if !hasAuth {
		return challenge(sessionID, req.Flows, nil, nil)
	}
	// The sign-in page completes m.login.sso in the session; a client may
	// then name the stage again or send the session alone.
	if ad.Type != "" && !(ad.Type == StageSSO && slices.Contains(data.Completed, StageSSO)) {
		if !offered(req.Flows, ad.Type) {
			return challenge(sessionID, req.Flows, data.Completed, merr.Custom(401, "M_UNRECOGNIZED", "Authentication type %s is not offered here", ad.Type))
		}
		if err := s.runStage(ctx, req, ad); err != nil {
			me, ok := merr.As(err)
			if !ok || me.Status == 429 || me.Status >= 500 {
				return err
			}
			return challenge(sessionID, req.Flows, data.Completed, me)
		}
		if !slices.Contains(data.Completed, ad.Type) {
			data.Completed = append(data.Completed, ad.Type)
		}
	}
	for _, f := range req.Flows {
		if len(f) > 0 && allIn(f, data.Completed) {
			if _, err := s.db.Exec(ctx, `DELETE FROM uia_sessions WHERE session_id = $1`, sessionID); err != nil {
				return fmt.Errorf("delete auth session %s: %w", sessionID, err)
			}
			return nil
		}
	}
	if err := s.saveUIASession(ctx, sessionID, data); err != nil {
		return err
	}
	return challenge(sessionID, req.Flows, data.Completed, nil)
}

// fixParams keeps the request's parameters in a session that has none yet,
// unless the request gives none either; it tells whether it did.
func fixParams(data *uiaData, params any) (bool, error) {
	if data.Params != nil || params == nil {
		return false, nil
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return false, fmt.Errorf("encode parameters of auth session: %w", err)
	}
	if string(raw) == "{}" {
		return false, nil
	}
	data.Params = raw
	return true, nil
}

func offered(flows [][]string, stage string) bool {
	for _, f := range flows {
		if slices.Contains(f, stage) {
			return true
		}
	}
	return false
}

func allIn(need, have []string) bool {
	for _, n := range need {
		if !slices.Contains(have, n) {
			return false
		}
	}
	return true
}

// runStage checks one stage's credentials.
func (s *Service) runStage(ctx context.Context, req UIARequest, ad authDict) error {
	switch ad.Type {
	case StageDummy:
		return nil
	case StagePassword:
		if req.UserID == "" {
			return merr.Forbidden("Password authentication needs a logged-in user")
		}
		who := ad.User
		if ad.Identifier != nil {
			if ad.Identifier.Type != "" && ad.Identifier.Type != "m.id.user" {
				return merr.Forbidden("Only m.id.user identifiers are supported")
			}
			who = ad.Identifier.User
		}
		if who != "" {
			if id, ok := s.resolveLogin(who); !ok || id != req.UserID {
				return merr.Forbidden("The password must be that of the user making the request")
			}
		}
		if ad.Password == "" {
			return merr.Forbidden("Invalid password")
		}
		a, err := s.verifyPassword(ctx, req.UserID, ad.Password, clientAddrFrom(ctx))
		if err != nil {
			if merr.Is(err, "M_FORBIDDEN") {
				return merr.Forbidden("Invalid password")
			}
			return err
		}
		if a.userID != req.UserID { // the directory named another account
			return merr.Forbidden("Invalid password")
		}
		return nil
	case StageSSO:
		return merr.Forbidden("Confirm your identity on the sign-in page that your client opens, then continue")
	case StageEmailIdentity:
		owner, err := s.emailIdentityUser(ctx, ad.creds())
		if err != nil {
			if me, ok := merr.As(err); ok && me.Status == 400 {
				return merr.Custom(401, me.Code, "%s", me.Msg)
			}
			return err
		}
		if req.UserID != "" && owner != req.UserID {
			return merr.Forbidden("The email address belongs to another account")
		}
		return nil
	case StageRegistrationToken:
		if s.opts.RegistrationTokens == nil || ad.Token == "" {
			return merr.Forbidden("Invalid registration token")
		}
		// The stage takes a use of the token at once, so that two
		// registrations cannot share a token's last use; the caller ends
		// it with FinishRegistrationToken.
		ok, err := s.opts.RegistrationTokens.ReserveRegistrationToken(ctx, ad.Token)
		if err != nil {
			return err
		}
		if !ok {
			s.record(ctx, auditlog.Entry{Action: "registration_token.refused", Addr: clientAddrFrom(ctx), Detail: map[string]any{"op": req.Op}})
			return merr.Forbidden("Invalid registration token")
		}
		return nil
	}
	return merr.Custom(401, "M_UNRECOGNIZED", "Unknown authentication type %s", ad.Type)
}

func newSessionID() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (s *Service) newUIASession(ctx context.Context, userID string, d uiaData) (string, error) {
	id := newSessionID()
	data, _ := json.Marshal(d) // strings and JSON already encoded
	now := s.now()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM uia_sessions WHERE created_ts < $1`, now.Add(-UIASessionLifetime).UnixMilli()); err != nil {
			return fmt.Errorf("delete expired auth sessions: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO uia_sessions (session_id, user_id, data, created_ts) VALUES ($1, $2, $3, $4)`,
			id, userID, string(data), now.UnixMilli()); err != nil {
			return fmt.Errorf("insert auth session: %w", err)
		}
		return nil
	})
	return id, err
}

func (s *Service) loadUIASession(ctx context.Context, id string, req UIARequest) (uiaData, error) {
	var userID, raw string
	var created int64
	err := s.db.QueryRow(ctx, `SELECT user_id, data, created_ts FROM uia_sessions WHERE session_id = $1`, id).Scan(&userID, &raw, &created)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && s.now().UnixMilli()-created > UIASessionLifetime.Milliseconds()) {
		return uiaData{}, merr.Unknown("Unknown or expired authentication session; start again without a session")
	}
	if err != nil {
		return uiaData{}, fmt.Errorf("select auth session: %w", err)
	}
	var data uiaData
	if err := json.Unmarshal([]byte(raw), &data); err != nil {
		return uiaData{}, fmt.Errorf("decode auth session: %w", err)
	}
	if data.Op != req.Op || userID != req.UserID {
		return uiaData{}, merr.Forbidden("This authentication session belongs to another operation")
	}
	return data, nil
}

func (s *Service) saveUIASession(ctx context.Context, id string, data uiaData) error {
	raw, _ := json.Marshal(data)
	if _, err := s.db.Exec(ctx, `UPDATE uia_sessions SET data = $2 WHERE session_id = $1`, id, string(raw)); err != nil {
		return fmt.Errorf("update auth session: %w", err)
	}
	return nil
}
