package mediaapi

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/haven-chat/haven/internal/merr"
)

// DefaultWait is how long a download waits for a pending upload when the
// request says nothing (timeout_ms; the spec's default of 20 seconds).
const DefaultWait = 20 * time.Second

// ParseTimeout reads timeout_ms of a download or thumbnail request
// (DefaultWait when absent, at most MaxWait).
func ParseTimeout(q url.Values) (time.Duration, error) {
	v := q.Get("timeout_ms")
	if v == "" {
		return DefaultWait, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, merr.InvalidParam("timeout_ms must be a non-negative integer")
	}
	if n > int64(MaxWait/time.Millisecond) {
		n = int64(MaxWait / time.Millisecond)
	}
	return time.Duration(n) * time.Millisecond, nil
}

// ParseThumbnailQuery reads width, height, method and animated of a
// thumbnail request (clients' and other servers').
func ParseThumbnailQuery(q url.Values) (ThumbnailRequest, error) {
	var req ThumbnailRequest
	for _, p := range []struct {
		name string
		dst  *int
	}{{"width", &req.Width}, {"height", &req.Height}} {
		v := q.Get(p.name)
		if v == "" {
			return req, merr.MissingParam("Missing %s", p.name)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1<<16 {
			return req, merr.InvalidParam("%s must be a positive integer", p.name)
		}
		*p.dst = n
	}
	switch m := q.Get("method"); m {
	case "", "scale":
		req.Method = Scale
	case "crop":
		req.Method = Crop
	default:
		return req, merr.InvalidParam("method must be crop or scale")
	}
	switch a := strings.ToLower(q.Get("animated")); a {
	case "", "false":
	case "true":
		req.Animated = true
	default:
		return req, merr.InvalidParam("animated must be true or false")
	}
	return req, nil
}
