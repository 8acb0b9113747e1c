package regtokens

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// MaxLength bounds a token, in characters.
const MaxLength = 64

// DefaultLength is the length of a generated token.
const DefaultLength = 16

// alphabet is the characters a token may hold (and generated ones use).
const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"

// Token is a registration token as the admin API shows it. UsesAllowed and
// ExpiryTime (Unix ms) are nil when unlimited.
type Token struct {
	Token       string `json:"token"`
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"`
}

// Store keeps the tokens.
type Store struct {
	db  *storage.DB
	now func() time.Time
}

// New returns the token store on db.
func New(db *storage.DB) *Store { return &Store{db: db, now: time.Now} }

const columns = `token, uses_allowed, pending, completed, expiry_ts`

// validNow is the SQL condition of a usable token; $1 is the current time.
const validNow = `(expiry_ts IS NULL OR expiry_ts > $1) AND (uses_allowed IS NULL OR pending + completed < uses_allowed)`

func scan(row interface{ Scan(...any) error }) (Token, error) {
	var t Token
	var uses, exp sql.NullInt64
	if err := row.Scan(&t.Token, &uses, &t.Pending, &t.Completed, &exp); err != nil {
		return t, err
	}
	if uses.Valid {
		t.UsesAllowed = &uses.Int64
	}
	if exp.Valid {
		t.ExpiryTime = &exp.Int64
	}
	return t, nil
}

// ValidToken checks the form of a token an admin chose.
func ValidToken(token string) error {
	if token == "" || len(token) > MaxLength {
		return merr.InvalidParam("token must be 1 to %d characters long", MaxLength)
	}
	for _, c := range token {
		if !validChar(c) {
			return merr.InvalidParam("token may only contain the characters A-Z, a-z, 0-9, '.', '_', '~' and '-'")
		}
	}
	return nil
}

func validChar(c rune) bool {
	return c < 128 && c >= 0 && indexByte(alphabet, byte(c))
}

func indexByte(s string, b byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return true
		}
	}
	return false
}

// List returns the tokens ordered by token; valid, when set, keeps only
// the usable (true) or the used up or expired (false) ones.
func (s *Store) List(ctx context.Context, valid *bool) ([]Token, error) {
	q := `SELECT ` + columns + ` FROM registration_tokens`
	var args []any
	if valid != nil {
		args = append(args, s.now().UnixMilli())
		if *valid {
			q += ` WHERE ` + validNow
		} else {
			q += ` WHERE NOT (` + validNow + `)`
		}
	}
	rows, err := s.db.Query(ctx, q+` ORDER BY token`, args...)
	if err != nil {
		return nil, fmt.Errorf("list registration tokens: %w", err)
	}
	defer rows.Close()
	out := []Token{}
	for rows.Next() {
		t, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list registration tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// Get returns one token (M_NOT_FOUND when unknown).
func (s *Store) Get(ctx context.Context, token string) (Token, error) {
	t, err := scan(s.db.QueryRow(ctx, `SELECT `+columns+` FROM registration_tokens WHERE token = $1`, token))
	if errors.Is(err, sql.ErrNoRows) {
		return t, merr.NotFound("No such registration token: %s", token)
	}
	if err != nil {
		return t, fmt.Errorf("select registration token: %w", err)
	}
	return t, nil
}

// NewToken describes a token to make: Token, or a random one of Length
// characters (DefaultLength when 0).
type NewToken struct {
	Token       string
	Length      int
	UsesAllowed *int64
	ExpiryTime  *int64
}

func (s *Store) checkLimits(uses, expiry *int64) error {
	if uses != nil && *uses < 0 {
		return merr.InvalidParam("uses_allowed must be a non-negative integer or null")
	}
	if expiry != nil && *expiry < s.now().UnixMilli() {
		return merr.InvalidParam("expiry_time must not be in the past")
	}
	return nil
}

// Create makes a token.
func (s *Store) Create(ctx context.Context, n NewToken) (Token, error) {
	if err := s.checkLimits(n.UsesAllowed, n.ExpiryTime); err != nil {
		return Token{}, err
	}
	random := n.Token == ""
	if random {
		if n.Length == 0 {
			n.Length = DefaultLength
		}
		if n.Length < 1 || n.Length > MaxLength {
			return Token{}, merr.InvalidParam("length must be between 1 and %d", MaxLength)
		}
	} else if err := ValidToken(n.Token); err != nil {
		return Token{}, err
	}
	for attempt := 0; ; attempt++ {
		tok := n.Token
		if random {
			tok = randomToken(n.Length)
		}
		res, err := s.db.Exec(ctx, `INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_ts, created_ts)
VALUES ($1, $2, 0, 0, $3, $4) ON CONFLICT (token) DO NOTHING`, tok, n.UsesAllowed, n.ExpiryTime, s.now().UnixMilli())
		if err != nil {
			return Token{}, fmt.Errorf("insert registration token: %w", err)
		}
		if k, _ := res.RowsAffected(); k == 1 {
			return Token{Token: tok, UsesAllowed: n.UsesAllowed, ExpiryTime: n.ExpiryTime}, nil
		}
		if !random || attempt >= 5 {
			return Token{}, merr.InvalidParam("Token already in use")
		}
	}
}

// generated is the part of alphabet random tokens are drawn from: letters
// and digits only, so that a token never begins with "-" (a command line
// would take it for an option) nor holds punctuation a reader may drop.
const generated = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randomToken(n int) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(generated)))
	for i := range b {
		k, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err) // crypto/rand does not fail on supported systems
		}
		b[i] = generated[k.Int64()]
	}
	return string(b)
}

// Change is an update of a token: each Set field replaces the value (nil
// for unlimited).
type Change struct {
	SetUses, SetExpiry      bool
	UsesAllowed, ExpiryTime *int64
}

// Update changes a token's limits and returns it.
func (s *Store) Update(ctx context.Context, token string, c Change) (Token, error) {
	if err := s.checkLimits(c.UsesAllowed, c.ExpiryTime); err != nil {
		return Token{}, err
	}
	if c.SetUses {
		if _, err := s.db.Exec(ctx, `UPDATE registration_tokens SET uses_allowed = $2 WHERE token = $1`, token, c.UsesAllowed); err != nil {
			return Token{}, fmt.Errorf("update registration token: %w", err)
		}
	}
	if c.SetExpiry {
		if _, err := s.db.Exec(ctx, `UPDATE registration_tokens SET expiry_ts = $2 WHERE token = $1`, token, c.ExpiryTime); err != nil {
			return Token{}, fmt.Errorf("update registration token: %w", err)
		}
	}
	return s.Get(ctx, token)
}

// Delete removes a token (M_NOT_FOUND when unknown).
func (s *Store) Delete(ctx context.Context, token string) error {
	res, err := s.db.Exec(ctx, `DELETE FROM registration_tokens WHERE token = $1`, token)
	if err != nil {
		return fmt.Errorf("delete registration token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return merr.NotFound("No such registration token: %s", token)
	}
	return nil
}

// ValidRegistrationToken tells whether a token may be used now.
func (s *Store) ValidRegistrationToken(ctx context.Context, token string) (bool, error) {
	if ValidToken(token) != nil {
		return false, nil
	}
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM registration_tokens WHERE `+validNow+` AND token = $2`, s.now().UnixMilli(), token).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check registration token: %w", err)
	}
	return true, nil
}

// ReserveRegistrationToken takes a use of a valid token (pending).
func (s *Store) ReserveRegistrationToken(ctx context.Context, token string) (bool, error) {
	if ValidToken(token) != nil {
		return false, nil
	}
	res, err := s.db.Exec(ctx, `UPDATE registration_tokens SET pending = pending + 1 WHERE `+validNow+` AND token = $2`, s.now().UnixMilli(), token)
	if err != nil {
		return false, fmt.Errorf("reserve registration token: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// FinishRegistrationToken ends a reserved use: completed, or given back.
func (s *Store) FinishRegistrationToken(ctx context.Context, token string, registered bool) error {
	done := 0
	if registered {
		done = 1
	}
	_, err := s.db.Exec(ctx, `UPDATE registration_tokens SET pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END,
completed = completed + $2 WHERE token = $1`, token, done)
	if err != nil {
		return fmt.Errorf("finish registration token: %w", err)
	}
	return nil
}
