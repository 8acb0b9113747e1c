package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"image"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"

	"github.com/haven-chat/haven/internal/logging"
	"github.com/haven-chat/haven/internal/lru"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/internal/netguard"
	"github.com/haven-chat/haven/storage"
)

// PreviewOptions configure URL previews (/preview_url).
type PreviewOptions struct {
	// Enabled serves previews; off, Preview answers 404 M_UNRECOGNIZED.
	Enabled bool
	// Denied are address ranges never fetched from, besides the built-in
	// special ranges (deniedRanges); Allowed are exceptions to both.
	Denied, Allowed []netip.Prefix
	// Timeout bounds one preview's fetches (10 s).
	Timeout time.Duration
	// MaxPageBytes is how much of a page is read (1 MiB).
	MaxPageBytes int64
	// MaxImageBytes bounds a previewed image (10 MiB, at most the upload limit).
	MaxImageBytes int64
	// CacheTTL is how long an answer is reused (1 hour).
	CacheTTL time.Duration
}

func (o *PreviewOptions) defaults(maxUpload int64) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxPageBytes <= 0 {
		o.MaxPageBytes = 1 << 20
	}
	if o.MaxImageBytes <= 0 {
		o.MaxImageBytes = 10 << 20
	}
	o.MaxImageBytes = min(o.MaxImageBytes, maxUpload)
	if o.CacheTTL <= 0 {
		o.CacheTTL = time.Hour
	}
}

// mustPrefixes parses CIDR literals.
func mustPrefixes(ss ...string) []netip.Prefix { return netguard.MustPrefixes(ss...) }

// policy is the address policy of previews: the shared internal ranges
// (internal/netguard) and the configured ones.
func (o *PreviewOptions) policy() netguard.Policy {
	return netguard.Policy{Allowed: o.Allowed, Denied: o.Denied}
}

// addrAllowed tells whether a preview may connect to addr.
func (o *PreviewOptions) addrAllowed(addr netip.Addr) bool { return o.policy().Allows(addr) }

// errBlockedAddr is a connection refused because of its address.
var errBlockedAddr = netguard.ErrBlocked

// previewClient is an HTTP client that checks the address of every
// connection when it is made — after name resolution, for the first
// request and every redirect — so a name that resolves to a public
// address when asked and a private one when connected to gains nothing.
// It uses no proxy (a proxy would connect on its behalf, unchecked).
func previewClient(o *PreviewOptions) *http.Client {
	return &http.Client{
		Timeout:   o.Timeout,
		Transport: o.policy().Transport(o.Timeout),
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return errors.New("redirect to a URL that is not http or https")
			}
			return nil
		},
	}
}

// preview is the per-service state of URL previews.
type preview struct {
	opts   PreviewOptions
	client *http.Client
	cache  *lru.Cache[string, previewEntry]
	sem    chan struct{}
}

type previewEntry struct {
	og      map[string]any
	expires time.Time
}

func newPreview(o PreviewOptions, maxUpload int64) *preview {
	o.defaults(maxUpload)
	return &preview{opts: o, client: previewClient(&o), cache: lru.New[string, previewEntry]("url_previews", 2000), sem: make(chan struct{}, 4)}
}

// MaxPreviewURLBytes bounds the URL of a preview.
const MaxPreviewURLBytes = 2048

// Preview answers /preview_url for a user: the page's OpenGraph data
// (og:title, og:description, og:image as an mxc:// URI with
// matrix:image:size, og:image:type and its width and height, ...), with
// <title> and the description meta tag standing in for missing og:title
// and og:description; an image URL is the image itself. Answers are cached
// (CacheTTL). Fetches never reach a denied address (403 M_FORBIDDEN); a
// page that cannot be fetched is 502.
func (s *Service) Preview(ctx context.Context, userID, rawURL string) (map[string]any, error) {
	p := s.preview
	if p == nil || !p.opts.Enabled {
		return nil, merr.Unrecognized("Unrecognized request")
	}
	if rawURL == "" {
		return nil, merr.MissingParam("Missing url")
	}
	u, err := url.Parse(rawURL)
	if err != nil || len(rawURL) > MaxPreviewURLBytes || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil {
		return nil, merr.InvalidParam("url must be an http or https URL of at most %d bytes", MaxPreviewURLBytes)
	}
	u.Fragment, u.RawFragment = "", ""
	key := u.String()
	now := s.opts.Now()
	if e, ok := p.cache.Get(key); ok && now.Before(e.expires) {
		return e.og, nil
	}
	select {
	case p.sem <- struct{}{}:
		defer func() { <-p.sem }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	og, err := s.previewURL(ctx, u)
	if err != nil {
		logging.From(ctx).WithError(err).WithField("user_id", userID).Debug("url preview failed")
		return nil, err
	}
	p.cache.Put(key, previewEntry{og: og, expires: now.Add(p.opts.CacheTTL)})
	return og, nil
}

// fetchError turns a failed fetch into a Matrix error.
func fetchError(err error) error {
	if errors.Is(err, errBlockedAddr) {
		return merr.Forbidden("URL previews may not fetch from this address")
	}
	return merr.BadGateway("Could not fetch the URL: %s", err.Error())
}

func (s *Service) fetch(ctx context.Context, u *url.URL, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, merr.InvalidParam("Invalid url")
	}
	req.Header.Set("User-Agent", "Haven URL preview (Matrix homeserver)")
	req.Header.Set("Accept", accept)
	resp, err := s.preview.client.Do(req)
	if err != nil {
		return nil, fetchError(err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		resp.Body.Close()
		return nil, merr.BadGateway("The URL answered %d", resp.StatusCode)
	}
	return resp, nil
}

func (s *Service) previewURL(ctx context.Context, u *url.URL) (map[string]any, error) {
	resp, err := s.fetch(ctx, u, "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	switch {
	case strings.HasPrefix(mt, "image/"):
		og := map[string]any{}
		if err := s.previewImage(ctx, resp, og); err != nil {
			return nil, err
		}
		return og, nil
	case mt == "text/html" || mt == "application/xhtml+xml" || mt == "":
		r, err := charset.NewReader(io.LimitReader(resp.Body, s.preview.opts.MaxPageBytes), ct)
		if err != nil {
			r = io.LimitReader(resp.Body, s.preview.opts.MaxPageBytes)
		}
		og := parseOpenGraph(r)
		if img, _ := og["og:image"].(string); img != "" {
			delete(og, "og:image")
			if iu, err := resp.Request.URL.Parse(img); err == nil && (iu.Scheme == "http" || iu.Scheme == "https") {
				if ir, err := s.fetch(ctx, iu, "image/*"); err == nil {
					if err := s.previewImage(ctx, ir, og); err != nil {
						logging.From(ctx).WithError(err).Debug("url preview: image not stored")
					}
					ir.Body.Close()
				}
			}
		}
		return og, nil
	}
	return map[string]any{}, nil
}

// previewImage stores a fetched image in the media store and describes it
// in og. The image is owned by the server (no user's quota).
func (s *Service) previewImage(ctx context.Context, resp *http.Response, og map[string]any) error {
	limit := s.preview.opts.MaxImageBytes
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fetchError(err)
	}
	if int64(len(b)) > limit {
		return merr.TooLarge("The image is larger than %d bytes", limit)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return merr.BadGateway("The URL is not an image this server reads")
	}
	st, err := s.files.writeBytes(b)
	if err != nil {
		return err
	}
	ctype := "image/" + format
	m := Media{MediaID: newMediaID(), ContentType: ctype, Size: st.Size, SHA256: st.Hash, CreatedTS: s.opts.Now().UnixMilli()}
	if err := s.finish(ctx, st, m, func(tx *storage.Tx) error { return insertMedia(ctx, tx, m) }); err != nil {
		return err
	}
	og["og:image"] = s.mxc(m.MediaID)
	og["og:image:type"] = ctype
	og["og:image:width"] = cfg.Width
	og["og:image:height"] = cfg.Height
	og["matrix:image:size"] = st.Size
	return nil
}

// parseOpenGraph reads a page's <head>: og: meta properties (the first of
// each), <title> and the description meta tag, which stand in for a
// missing og:title and og:description.
func parseOpenGraph(r io.Reader) map[string]any {
	og := map[string]any{}
	var title, description string
	z := html.NewTokenizer(r)
	inTitle := false
	for {
		switch z.Next() {
		case html.ErrorToken:
			return finishOpenGraph(og, title, description)
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch string(name) {
			case "title":
				inTitle = title == ""
			case "meta":
				var prop, content, metaName string
				for hasAttr {
					var k, v []byte
					k, v, hasAttr = z.TagAttr()
					switch string(k) {
					case "property":
						prop = string(v)
					case "name":
						metaName = strings.ToLower(string(v))
					case "content":
						content = string(v)
					}
				}
				if prop == "" && strings.HasPrefix(metaName, "og:") {
					prop = metaName
				}
				if strings.HasPrefix(prop, "og:") && len(prop) <= 64 {
					if _, seen := og[prop]; !seen {
						og[prop] = truncate(content, 2000)
					}
				}
				if metaName == "description" && description == "" {
					description = content
				}
			case "body":
				// Everything a preview needs is in the head.
				return finishOpenGraph(og, title, description)
			}
		case html.TextToken:
			if inTitle {
				title += string(z.Text())
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); string(name) == "title" {
				inTitle = false
			}
		}
	}
}

func finishOpenGraph(og map[string]any, title, description string) map[string]any {
	if _, ok := og["og:title"]; !ok {
		if t := strings.Join(strings.Fields(title), " "); t != "" {
			og["og:title"] = truncate(t, 2000)
		}
	}
	if _, ok := og["og:description"]; !ok {
		if d := strings.TrimSpace(description); d != "" {
			og["og:description"] = truncate(d, 2000)
		}
	}
	return og
}

// truncate cuts s to at most n bytes on a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
