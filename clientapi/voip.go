package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/httpx"
)

// turnCredentials are the answer of /voip/turnServer.
type turnCredentials struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	URIs     []string `json:"uris"`
	TTL      int64    `json:"ttl"`
}

// TURNCredentials computes time-limited TURN credentials by the TURN REST
// API convention (coturn's use-auth-secret): the username is
// "<expiry unix seconds>:<user ID>" and the password is the base64 of the
// HMAC-SHA1 of the username keyed with the shared secret. ok is false when
// no TURN server or no shared secret is configured.
func TURNCredentials(cfg config.TURN, userID string, now time.Time) (creds turnCredentials, ok bool) {
	uris := cfg.URIs.Items()
	if len(uris) == 0 || cfg.SharedSecret == "" {
		return turnCredentials{}, false
	}
	lifetime := cfg.Lifetime()
	username := strconv.FormatInt(now.Add(lifetime).Unix(), 10) + ":" + userID
	mac := hmac.New(sha1.New, []byte(cfg.SharedSecret))
	mac.Write([]byte(username))
	return turnCredentials{
		Username: username,
		Password: base64.StdEncoding.EncodeToString(mac.Sum(nil)),
		URIs:     uris,
		TTL:      int64(lifetime / time.Second),
	}, true
}

// turnServer answers /voip/turnServer: credentials when a TURN server with a
// shared secret is configured, else the empty object clients accept as
// "no TURN server".
func (a *API) turnServer(w http.ResponseWriter, r *http.Request) error {
	creds, ok := TURNCredentials(a.Cfg.TURN, DeviceFrom(r).UserID, time.Now())
	if !ok {
		return httpx.OK(w)
	}
	return httpx.JSON(w, http.StatusOK, creds)
}
