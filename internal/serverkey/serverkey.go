// Package serverkey loads the server's ed25519 signing key from the database,
// creating it on first start. Keeping it in the database means every Haven
// process of a deployment signs with the same key and backups include it.
// Table: server_keys.
package serverkey

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/haven-chat/haven/storage"
)

// Key is the signing key of this server.
type Key struct {
	ID      gomatrixserverlib.KeyID
	Private ed25519.PrivateKey
}

// Public returns the unpadded base64 public key.
func (k Key) Public() string {
	return base64.RawStdEncoding.EncodeToString(k.Private.Public().(ed25519.PublicKey))
}

// Load returns the oldest key, generating one if there is none.
func Load(ctx context.Context, db *storage.DB) (Key, error) {
	var id string
	var seed []byte
	err := db.QueryRow(ctx, `SELECT key_id, seed FROM server_keys ORDER BY created_ts ASC, key_id ASC LIMIT 1`).Scan(&id, &seed)
	if err == nil {
		if len(seed) != ed25519.SeedSize {
			return Key{}, fmt.Errorf("signing key %s in the database is damaged", id)
		}
		return Key{ID: gomatrixserverlib.KeyID(id), Private: ed25519.NewKeyFromSeed(seed)}, nil
	}
	seed = make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return Key{}, err
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	id = "ed25519:" + strings.TrimRight(base64.RawURLEncoding.EncodeToString(rnd[:]), "=")
	// ON CONFLICT keeps a racing process's key out; re-read afterwards so all agree.
	if _, err := db.Exec(ctx, `INSERT INTO server_keys (key_id, seed, created_ts) VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING`,
		id, seed, time.Now().UnixMilli()); err != nil {
		return Key{}, fmt.Errorf("store signing key: %w", err)
	}
	err = db.QueryRow(ctx, `SELECT key_id, seed FROM server_keys ORDER BY created_ts ASC, key_id ASC LIMIT 1`).Scan(&id, &seed)
	if err != nil {
		return Key{}, fmt.Errorf("read signing key: %w", err)
	}
	return Key{ID: gomatrixserverlib.KeyID(id), Private: ed25519.NewKeyFromSeed(seed)}, nil
}
