package loadtest

// The load generator's Matrix client: plain HTTP+JSON over one tuned
// Transport, with the few Client-Server API calls the load test needs.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ltTransport is one Transport for many concurrent connections to one host:
// every long-poll keeps its connection, and idle connections are kept rather
// than closed and re-dialled.
func ltTransport(maxConns int) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil, // loopback only: never through a proxy
		DialContext:           d.DialContext,
		MaxIdleConns:          maxConns,
		MaxIdleConnsPerHost:   maxConns,
		MaxConnsPerHost:       0,
		IdleConnTimeout:       5 * time.Minute,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		ResponseHeaderTimeout: 0, // long-polls answer late; each call has its own deadline
		ExpectContinueTimeout: time.Second,
	}
}

// mxError is a failed Client-Server API call: an HTTP status with its Matrix
// errcode, or a transport error (Status 0).
type mxError struct {
	Status     int
	ErrCode    string
	Msg        string
	RetryAfter time.Duration
	Op         string
}

func (e *mxError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("%s: %s", e.Op, e.Msg)
	}
	return fmt.Sprintf("%s: %d %s: %s", e.Op, e.Status, e.ErrCode, e.Msg)
}

// errKey is the short name an error is counted under in the report:
// "429 M_LIMIT_EXCEEDED", "500 M_UNKNOWN", "timeout", "connection refused", ...
func errKey(err error) string {
	var me *mxError
	if errors.As(err, &me) && me.Status != 0 {
		if me.ErrCode == "" {
			return strconv.Itoa(me.Status)
		}
		return strconv.Itoa(me.Status) + " " + me.ErrCode
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	msg := err.Error()
	for _, s := range []string{"connection refused", "connection reset", "broken pipe", "EOF", "too many open files", "cannot assign requested address", "i/o timeout"} {
		if strings.Contains(msg, s) {
			return s
		}
	}
	return "transport error"
}

// hasErrCode tells whether err is a Matrix error with the given errcode.
func hasErrCode(err error, code string) bool {
	var me *mxError
	return errors.As(err, &me) && me.ErrCode == code
}

// retryable tells whether a setup call is worth another try.
func retryable(err error) (bool, time.Duration) {
	var me *mxError
	if !errors.As(err, &me) {
		return false, 0
	}
	switch {
	case me.Status == http.StatusTooManyRequests:
		wait := me.RetryAfter
		if wait <= 0 {
			wait = time.Second
		}
		return true, wait
	case me.Status == 0, me.Status >= 500:
		return true, 500 * time.Millisecond
	}
	return false, 0
}

// mxClient calls one homeserver.
type mxClient struct {
	hc   *http.Client
	base string
}

func newMXClient(base string, maxConns int) *mxClient {
	return &mxClient{hc: &http.Client{Transport: ltTransport(maxConns)}, base: strings.TrimRight(base, "/")}
}

// close drops the idle connections.
func (c *mxClient) close() { c.hc.CloseIdleConnections() }

// do sends one request with a JSON body (if body is not nil) and decodes a
// 200 answer into out (if not nil). It returns the size of the answer.
func (c *mxClient) do(ctx context.Context, op, method, path, token string, body, out any) (int, error) {
	data, err := c.raw(ctx, op, method, path, token, body)
	if err != nil {
		return len(data), err
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return len(data), fmt.Errorf("%s: decode answer: %w", op, err)
		}
	}
	return len(data), nil
}

// raw sends one request and returns the body of a 200 answer, read to its
// last byte; any other status is an *mxError.
func (c *mxClient) raw(ctx context.Context, op, method, path, token string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("%s: encode body: %w", op, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	buf, err := c.exchange(ctx, op, req, nil)
	if buf == nil {
		return nil, err
	}
	return buf.Bytes(), err
}

func decodeMXError(op string, status int, data []byte) *mxError {
	var body struct {
		ErrCode    string `json:"errcode"`
		Error      string `json:"error"`
		RetryAfter int64  `json:"retry_after_ms"`
	}
	e := &mxError{Op: op, Status: status}
	if json.Unmarshal(data, &body) == nil {
		e.ErrCode, e.Msg, e.RetryAfter = body.ErrCode, body.Error, time.Duration(body.RetryAfter)*time.Millisecond
	} else {
		e.Msg = strings.TrimSpace(string(data))
		if len(e.Msg) > 200 {
			e.Msg = e.Msg[:200]
		}
	}
	return e
}

// withRetry runs a setup call, retrying rate limits, server errors and
// transport errors a few times.
func withRetry(ctx context.Context, fn func(ctx context.Context) error) error {
	const attempts = 6
	var err error
	for i := 0; i < attempts; i++ {
		if err = fn(ctx); err == nil {
			return nil
		}
		again, wait := retryable(err)
		if !again || i == attempts-1 {
			return err
		}
		select {
		case <-time.After(wait << min(i, 3)):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

// mxSession is a logged-in device.
type mxSession struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	DeviceID    string `json:"device_id"`
}

func (c *mxClient) registerSharedSecret(ctx context.Context, secret, user, password string) (mxSession, error) {
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	const path = "/_synapse/admin/v1/register"
	if _, err := c.do(ctx, "shared-secret nonce", "GET", path, "", nil, &nonce); err != nil {
		return mxSession{}, err
	}
	mac := sharedSecretMAC(secret, nonce.Nonce, user, password)
	body := map[string]any{"nonce": nonce.Nonce, "username": user, "password": password, "admin": false, "mac": mac}
	var s mxSession
	_, err := c.do(ctx, "shared-secret register "+user, "POST", path, "", body, &s)
	return s, err
}

func (c *mxClient) registerDummy(ctx context.Context, user, password string) (mxSession, error) {
	body := map[string]any{"username": user, "password": password, "auth": map[string]string{"type": "m.login.dummy"},
		"initial_device_display_name": "haven loadtest"}
	var s mxSession
	_, err := c.do(ctx, "register "+user, "POST", "/_matrix/client/v3/register", "", body, &s)
	return s, err
}

func (c *mxClient) login(ctx context.Context, user, password string) (mxSession, error) {
	body := map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": user},
		"password": password, "initial_device_display_name": "haven loadtest"}
	var s mxSession
	_, err := c.do(ctx, "login "+user, "POST", "/_matrix/client/v3/login", "", body, &s)
	return s, err
}

func (c *mxClient) putFilter(ctx context.Context, s mxSession, filter any) (string, error) {
	var out struct {
		FilterID string `json:"filter_id"`
	}
	_, err := c.do(ctx, "filter "+s.UserID, "POST", "/_matrix/client/v3/user/"+url.PathEscape(s.UserID)+"/filter", s.AccessToken, filter, &out)
	return out.FilterID, err
}

func (c *mxClient) createRoom(ctx context.Context, token string, body map[string]any) (string, error) {
	var out struct {
		RoomID string `json:"room_id"`
	}
	_, err := c.do(ctx, "createRoom", "POST", "/_matrix/client/v3/createRoom", token, body, &out)
	return out.RoomID, err
}

func (c *mxClient) resolveAlias(ctx context.Context, token, alias string) (string, error) {
	var out struct {
		RoomID string `json:"room_id"`
	}
	_, err := c.do(ctx, "resolve "+alias, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), token, nil, &out)
	return out.RoomID, err
}

func (c *mxClient) invite(ctx context.Context, token, roomID, userID string) error {
	_, err := c.do(ctx, "invite "+userID, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/invite", token,
		map[string]string{"user_id": userID}, nil)
	return err
}

func (c *mxClient) join(ctx context.Context, token, roomID string) error {
	_, err := c.do(ctx, "join "+roomID, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", token, struct{}{}, nil)
	return err
}

func (c *mxClient) send(ctx context.Context, token, roomID, txnID string, content any) error {
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + url.PathEscape(txnID)
	_, err := c.do(ctx, "send", "PUT", path, token, content, nil)
	return err
}

// ltSyncResponse is the part of a /sync answer the load test reads.
type ltSyncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events  []ltEvent `json:"events"`
				Limited bool      `json:"limited"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
	ToDevice struct {
		Events []ltEvent `json:"events"`
	} `json:"to_device"`
}

// ltEvent is a timeline event; only the load test's own fields are decoded.
type ltEvent struct {
	Type    string `json:"type"`
	Sender  string `json:"sender"`
	Content struct {
		Run string `json:"lt_run"`
		Seq int64  `json:"lt_seq"`
	} `json:"content"`
}

// syncPath is the path and query of a /sync; since "" is an initial sync;
// timeout is the long-poll's timeout (0 answers at once).
func syncPath(since, filter string, timeout time.Duration) string {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	return "/_matrix/client/v3/sync?" + q.Encode()
}

// sync runs one /sync and decodes the part of the answer the load test reads.
func (c *mxClient) sync(ctx context.Context, token, since, filter string, timeout time.Duration) (*ltSyncResponse, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout+60*time.Second)
	defer cancel()
	var out ltSyncResponse
	n, err := c.do(ctx, "sync", "GET", syncPath(since, filter, timeout), token, nil, &out)
	if err != nil {
		return nil, n, err
	}
	return &out, n, nil
}

// serverNameOf returns the server name part of a user ID.
func serverNameOf(userID string) string {
	if i := strings.IndexByte(userID, ':'); i >= 0 {
		return userID[i+1:]
	}
	return ""
}

// sharedSecretMAC is the MAC of Synapse's shared-secret registration:
// hex(HMAC-SHA1(secret, nonce NUL user NUL password NUL "notadmin")).
func sharedSecretMAC(secret, nonce, user, password string) string {
	m := hmac.New(sha1.New, []byte(secret))
	for i, part := range []string{nonce, user, password, "notadmin"} {
		if i > 0 {
			m.Write([]byte{0})
		}
		m.Write([]byte(part))
	}
	return hex.EncodeToString(m.Sum(nil))
}
