package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/userapi"
)

// Token is the answer of the token endpoint.
type Token struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
}

func randomCode() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random code: %w", err)
	}
	return "hva_" + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// s256 is the PKCE S256 challenge of a verifier.
func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func tokenOf(sess userapi.Session, scope string) Token {
	return Token{AccessToken: sess.AccessToken, TokenType: "Bearer", ExpiresIn: sess.ExpiresInMS / 1000,
		RefreshToken: sess.RefreshToken, Scope: scope}
}

// single returns a form parameter that may be given at most once.
func single(form url.Values, name string) (string, *Error) {
	vs := form[name]
	if len(vs) > 1 {
		return "", oauthErr(ErrInvalidRequest, "%s is given more than once", name)
	}
	if len(vs) == 0 {
		return "", nil
	}
	if !storage.StorableText(vs[0]) || len(vs[0]) > 4096 {
		return "", oauthErr(ErrInvalidRequest, "%s is not valid text", name)
	}
	return vs[0], nil
}

// required returns the named parameters, or invalid_request naming the
// first one missing.
func required(form url.Values, names ...string) ([]string, error) {
	out := make([]string, len(names))
	for i, n := range names {
		v, e := single(form, n)
		if e != nil {
			return nil, e
		}
		if v == "" {
			return nil, oauthErr(ErrInvalidRequest, "%s is missing", n)
		}
		out[i] = v
	}
	return out, nil
}

// Grant runs the token endpoint for a form (grant_type authorization_code
// or refresh_token).
func (s *Service) Grant(ctx context.Context, form url.Values, clientAddr string) (Token, error) {
	gt, e := single(form, "grant_type")
	if e != nil {
		return Token{}, e
	}
	switch gt {
	case "authorization_code":
		return s.exchangeCode(ctx, form, clientAddr)
	case "refresh_token":
		return s.refresh(ctx, form)
	case "":
		return Token{}, oauthErr(ErrInvalidRequest, "grant_type is missing")
	}
	return Token{}, oauthErr(ErrUnsupportedGrantType, "grant_type must be authorization_code or refresh_token")
}

// client returns the client a token request names, or invalid_client.
func (s *Service) client(ctx context.Context, clientID string) (Client, error) {
	c, ok, err := s.Client(ctx, clientID)
	if err != nil {
		return Client{}, err
	}
	if !ok {
		return Client{}, oauthErr(ErrInvalidClient, "Unknown client_id")
	}
	return c, nil
}

type codeRow struct {
	clientID, userID, redirectURI, scope, deviceID, challenge string
	expires                                                   int64
}

func (s *Service) exchangeCode(ctx context.Context, form url.Values, clientAddr string) (Token, error) {
	v, err := required(form, "code", "redirect_uri", "client_id", "code_verifier")
	if err != nil {
		return Token{}, err
	}
	code, redirectURI, clientID, verifier := v[0], v[1], v[2], v[3]
	c, err := s.client(ctx, clientID)
	if err != nil {
		return Token{}, err
	}
	// The code is used up by the first try, right or wrong: a wrong
	// verifier cannot be retried against it.
	var row codeRow
	reused := false
	h := userapi.HashToken(code)
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE oauth_codes SET used = TRUE WHERE code_hash = $1 AND used = FALSE
RETURNING client_id, user_id, redirect_uri, scope, device_id, code_challenge, expires_ts`, h).
			Scan(&row.clientID, &row.userID, &row.redirectURI, &row.scope, &row.deviceID, &row.challenge, &row.expires)
		if errors.Is(err, sql.ErrNoRows) {
			err = tx.QueryRow(ctx, `SELECT client_id, user_id, device_id FROM oauth_codes WHERE code_hash = $1`, h).Scan(&row.clientID, &row.userID, &row.deviceID)
			reused = err == nil
		}
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, oauthErr(ErrInvalidGrant, "Unknown authorization code")
	}
	if err != nil {
		return Token{}, fmt.Errorf("use oauth code: %w", err)
	}
	if reused {
		// RFC 6749 4.1.2: a code used twice may have been stolen; the
		// session it made is ended.
		if err := s.revokeSession(ctx, row.userID, row.deviceID, row.clientID); err != nil {
			return Token{}, err
		}
		return Token{}, oauthErr(ErrInvalidGrant, "The authorization code was already used; the session it made has been signed out")
	}
	var refusal *Error
	switch {
	case s.now().UnixMilli() > row.expires:
		refusal = oauthErr(ErrInvalidGrant, "The authorization code has expired")
	case row.clientID != c.ID:
		refusal = oauthErr(ErrInvalidGrant, "The authorization code was issued to another client")
	case row.redirectURI != redirectURI:
		refusal = oauthErr(ErrInvalidGrant, "redirect_uri is not the one of the authorization request")
	case !validPKCE(verifier) || subtle.ConstantTimeCompare([]byte(s256(verifier)), []byte(row.challenge)) != 1:
		refusal = oauthErr(ErrInvalidGrant, "The code_verifier does not match the code_challenge")
	}
	if refusal != nil {
		// A code refused made no session: it is forgotten, so that trying
		// it again is not taken for a stolen code's second use.
		err := s.db.Write(ctx, func(tx *storage.Tx) error {
			_, err := tx.Exec(ctx, `DELETE FROM oauth_codes WHERE code_hash = $1`, h)
			return err
		})
		if err != nil {
			return Token{}, fmt.Errorf("delete refused oauth code: %w", err)
		}
		return Token{}, refusal
	}
	sess, err := s.users.LoginOAuth(ctx, row.userID, row.deviceID, c.Name(), clientAddr, c.ID, row.scope)
	if err != nil {
		if me, ok := merr.As(err); ok {
			return Token{}, oauthErr(ErrInvalidGrant, "%s", me.Msg)
		}
		return Token{}, err
	}
	return tokenOf(sess, row.scope), nil
}

// session returns the client and scope an OAuth device was issued to; ok
// is false for a device that was not made by the OAuth API.
func (s *Service) session(ctx context.Context, userID, deviceID string) (clientID, scope string, ok bool, err error) {
	return s.users.OAuthSession(ctx, userID, deviceID)
}

func (s *Service) refresh(ctx context.Context, form url.Values) (Token, error) {
	v, err := required(form, "refresh_token", "client_id")
	if err != nil {
		return Token{}, err
	}
	token, clientID := v[0], v[1]
	if _, err := s.client(ctx, clientID); err != nil {
		return Token{}, err
	}
	bad := oauthErr(ErrInvalidGrant, "Unknown refresh token, or one already replaced")
	userID, deviceID, kind, err := s.users.DeviceOfToken(ctx, token)
	if err != nil {
		return Token{}, err
	}
	if kind != userapi.TokenRefresh {
		return Token{}, bad
	}
	owner, scope, ok, err := s.session(ctx, userID, deviceID)
	if err != nil {
		return Token{}, err
	}
	if !ok || owner != clientID {
		return Token{}, oauthErr(ErrInvalidGrant, "The refresh token was not issued to this client")
	}
	sess, err := s.users.Refresh(ctx, token)
	if err != nil {
		if _, ok := merr.As(err); ok {
			return Token{}, bad
		}
		return Token{}, err
	}
	return tokenOf(sess, scope), nil
}

// revokeSession signs out the device of an OAuth session if it still
// belongs to clientID.
func (s *Service) revokeSession(ctx context.Context, userID, deviceID, clientID string) error {
	owner, _, ok, err := s.session(ctx, userID, deviceID)
	if err != nil || !ok || owner != clientID {
		return err
	}
	return s.endSession(ctx, userID, deviceID)
}

// endSession deletes the device (and with it its OAuth session row).
func (s *Service) endSession(ctx context.Context, userID, deviceID string) error {
	return s.users.DeleteDevices(ctx, userID, []string{deviceID})
}

// Revoke revokes an access or refresh token (RFC 7009): the device is
// signed out. An unknown token is not an error. A token of an OAuth
// session may only be revoked by its own client, when client_id is given.
func (s *Service) Revoke(ctx context.Context, form url.Values) error {
	v, err := required(form, "token")
	if err != nil {
		return err
	}
	if _, e := single(form, "token_type_hint"); e != nil {
		return e
	}
	clientID, e := single(form, "client_id")
	if e != nil {
		return e
	}
	if clientID != "" {
		if _, err := s.client(ctx, clientID); err != nil {
			return err
		}
	}
	userID, deviceID, kind, err := s.users.DeviceOfToken(ctx, v[0])
	if err != nil || kind == userapi.TokenUnknown {
		return err
	}
	owner, _, ok, err := s.session(ctx, userID, deviceID)
	if err != nil {
		return err
	}
	if ok && clientID != "" && owner != clientID {
		return oauthErr(ErrUnauthorizedClient, "The token was issued to another client")
	}
	return s.endSession(ctx, userID, deviceID)
}
