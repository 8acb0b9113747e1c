// Package serverkey loads the server's ed25519 signing key from the database,
// creating it on first start. Keeping it in the database means every Haven
// process of a deployment signs with the same key and backups include it.
//
// Keys rotate: the one key with expired_ts = 0 is the active key and signs;
// Rotate replaces it with a new one and keeps the old key with the time it
// stopped signing, so that other servers can still check what it signed
// (the key server lists it under old_verify_keys). A running process keeps
// the key it loaded at start: after a rotation every process must restart.
// Table: server_keys.
package serverkey

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/storage"
)

// Key is a signing key of this server.
type Key struct {
	ID      gomatrixserverlib.KeyID
	Private ed25519.PrivateKey
	// CreatedTS is when the key was made, in milliseconds.
	CreatedTS int64
	// ExpiredTS is when the key stopped signing, in milliseconds; 0 for
	// the active key.
	ExpiredTS int64
}

// Public returns the unpadded base64 public key.
func (k Key) Public() string {
	return base64.RawStdEncoding.EncodeToString(k.Private.Public().(ed25519.PublicKey))
}

// PublicKey returns the ed25519 public key.
func (k Key) PublicKey() ed25519.PublicKey {
	return k.Private.Public().(ed25519.PublicKey)
}

const selectActive = `SELECT key_id, seed, created_ts, expired_ts FROM server_keys WHERE expired_ts = 0`

// Load returns the active key, generating one if there is none.
func Load(ctx context.Context, db *storage.DB) (Key, error) {
	k, err := scanKey(db.QueryRow(ctx, selectActive))
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return Key{}, err
	}
	// The unique index on the active key keeps a racing process's key out
	// (ON CONFLICT); re-read afterwards so that all agree.
	err = db.Write(ctx, func(tx *storage.Tx) error {
		id, seed, err := newSeed()
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO server_keys (key_id, seed, created_ts, expired_ts) VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING`,
			id, seed, time.Now().UnixMilli())
		return err
	})
	if err != nil {
		return Key{}, fmt.Errorf("store signing key: %w", err)
	}
	k, err = scanKey(db.QueryRow(ctx, selectActive))
	if err != nil {
		return Key{}, fmt.Errorf("read signing key: %w", err)
	}
	return k, nil
}

// Rotate makes a new active key and marks the previous one (if any) as
// expired now. It returns the new key. Processes that are running keep
// signing with the key they loaded until they restart.
func Rotate(ctx context.Context, db *storage.DB) (Key, error) {
	id, seed, err := newSeed()
	if err != nil {
		return Key{}, err
	}
	now := time.Now().UnixMilli()
	err = db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE server_keys SET expired_ts = $1 WHERE expired_ts = 0`, now); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO server_keys (key_id, seed, created_ts, expired_ts) VALUES ($1, $2, $3, 0)`, id, seed, now)
		return err
	})
	if err != nil {
		return Key{}, fmt.Errorf("rotate signing key: %w", err)
	}
	return Key{ID: gomatrixserverlib.KeyID(id), Private: ed25519.NewKeyFromSeed(seed), CreatedTS: now}, nil
}

// All returns every key of the server: the active key first (if there is
// one), then the expired keys, most recently expired first.
func All(ctx context.Context, db *storage.DB) ([]Key, error) {
	rows, err := db.Query(ctx, `SELECT key_id, seed, created_ts, expired_ts FROM server_keys
		ORDER BY CASE WHEN expired_ts = 0 THEN 0 ELSE 1 END, expired_ts DESC, created_ts DESC, key_id ASC`)
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	defer rows.Close()
	var out []Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	return out, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanKey(row scanner) (Key, error) {
	var k Key
	var id string
	var seed []byte
	if err := row.Scan(&id, &seed, &k.CreatedTS, &k.ExpiredTS); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Key{}, err
		}
		return Key{}, fmt.Errorf("read signing key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return Key{}, fmt.Errorf("signing key %s in the database is damaged", id)
	}
	k.ID = gomatrixserverlib.KeyID(id)
	k.Private = ed25519.NewKeyFromSeed(seed)
	return k, nil
}

func newSeed() (id string, seed []byte, err error) {
	seed = make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return "", nil, err
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", nil, err
	}
	return "ed25519:" + strings.TrimRight(base64.RawURLEncoding.EncodeToString(rnd[:]), "="), seed, nil
}
