package loadtest

// The media scenario: --workers workers upload --media-bytes files through
// POST /_matrix/media/v3/upload for the first half of --duration, then
// download them (round robin) through GET
// /_matrix/client/v1/media/download/{server}/{mediaId} for the second half.
// Every file differs (its first 16 bytes are its number), so the server's
// store by content hash cannot fold them into one, and every download is
// compared with what was uploaded.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type ltMediaPhase struct {
	Seconds          float64    `json:"seconds"`
	Requests         ltOpReport `json:"requests"`
	MiBPerSecond     float64    `json:"mib_per_s"`
	ServerCPUSeconds *float64   `json:"server_cpu_seconds,omitempty"`
	ServerCPUMsPerOp *float64   `json:"server_cpu_ms_per_request,omitempty"`
}

type ltMediaReport struct {
	Bytes         int          `json:"file_bytes"`
	Workers       int          `json:"workers"`
	WindowSeconds float64      `json:"window_seconds"`
	Upload        ltMediaPhase `json:"upload"`
	Download      ltMediaPhase `json:"download"`
	Corrupt       int          `json:"downloads_differing_from_upload"`
}

// mediaContent is file n: the base bytes with n in its first 16 bytes.
func mediaContent(base []byte, n int64, runID string) []byte {
	b := bytes.Clone(base)
	var tag [16]byte
	binary.BigEndian.PutUint64(tag[:8], uint64(n))
	copy(tag[8:], runID)
	copy(b, tag[:min(len(tag), len(b))])
	return b
}

// ltMediaFile is an uploaded file.
type ltMediaFile struct {
	n               int64
	server, mediaID string
}

// parseMXC splits mxc://server/id.
func parseMXC(uri string) (string, string, bool) {
	rest, ok := strings.CutPrefix(uri, "mxc://")
	if !ok {
		return "", "", false
	}
	server, id, ok := strings.Cut(rest, "/")
	return server, id, ok && server != "" && id != "" && !strings.Contains(id, "/")
}

func (c *mxClient) uploadMedia(ctx context.Context, token, fileName string, data []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/_matrix/media/v3/upload?filename="+url.QueryEscape(fileName), bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	body, err := c.exchange(ctx, "upload", req, nil)
	if err != nil {
		return "", err
	}
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(body.Bytes(), &out); err != nil {
		return "", fmt.Errorf("upload: decode answer: %w", err)
	}
	return out.ContentURI, nil
}

// downloadMedia reads a file into buf (reset first).
func (c *mxClient) downloadMedia(ctx context.Context, token, server, mediaID string, buf *bytes.Buffer) error {
	path := "/_matrix/client/v1/media/download/" + url.PathEscape(server) + "/" + url.PathEscape(mediaID)
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	_, err = c.exchange(ctx, "download", req, buf)
	return err
}

// exchange sends req and reads the answer into buf (a new one if nil),
// to its last byte; a status other than 200 is an *mxError, returned with
// the answer's body.
func (c *mxClient) exchange(ctx context.Context, op string, req *http.Request, buf *bytes.Buffer) (*bytes.Buffer, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &mxError{Op: op, Msg: err.Error()}
	}
	defer resp.Body.Close()
	if buf == nil {
		buf = &bytes.Buffer{}
	}
	buf.Reset()
	if _, err := io.Copy(buf, resp.Body); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &mxError{Op: op, Msg: "read answer: " + err.Error()}
	}
	if resp.StatusCode != http.StatusOK {
		return buf, decodeMXError(op, resp.StatusCode, buf.Bytes())
	}
	return buf, nil
}

// ltMediaRun holds the uploaded files.
type ltMediaRun struct {
	e     *ltEnv
	users []*ltUser
	base  []byte
	next  atomic.Int64

	mu      sync.Mutex
	files   []ltMediaFile
	corrupt int
}

func (m *ltMediaRun) upload(ctx context.Context, worker int, st *ltSendStats) {
	n := m.next.Add(1) - 1
	u := m.users[worker%len(m.users)]
	data := mediaContent(m.base, n, m.e.runID)
	start := time.Now()
	uri, err := m.e.c.uploadMedia(ctx, u.AccessToken, fmt.Sprintf("lt-%s-%d.bin", m.e.runID, n), data)
	lat := time.Since(start)
	server, id, ok := parseMXC(uri)
	if err == nil && !ok {
		err = fmt.Errorf("upload: content_uri %q is not an mxc URI", uri)
	}
	if ctx.Err() != nil {
		return // cut off by the end of the run: not counted
	}
	st.record(lat, err)
	if err == nil {
		m.mu.Lock()
		m.files = append(m.files, ltMediaFile{n: n, server: server, mediaID: id})
		m.mu.Unlock()
	}
}

func (m *ltMediaRun) download(ctx context.Context, worker int, seq int64, st *ltSendStats, buf *bytes.Buffer) {
	m.mu.Lock()
	f := m.files[int(seq%int64(len(m.files)))]
	m.mu.Unlock()
	u := m.users[worker%len(m.users)]
	start := time.Now()
	err := m.e.c.downloadMedia(ctx, u.AccessToken, f.server, f.mediaID, buf)
	lat := time.Since(start)
	if ctx.Err() != nil {
		return
	}
	st.record(lat, err)
	if err == nil && !bytes.Equal(buf.Bytes(), mediaContent(m.base, f.n, m.e.runID)) {
		m.mu.Lock()
		m.corrupt++
		m.mu.Unlock()
	}
}

// phase runs uploads (download false) or downloads on the workers for d.
func (m *ltMediaRun) phase(ctx context.Context, d time.Duration, download bool, st *ltSendStats) {
	bufs := make([]bytes.Buffer, m.e.opts.Workers)
	closedLoop(ctx, m.e.opts.Workers, d, func(ctx context.Context, w int, seq int64) bool {
		if download {
			m.download(ctx, w, seq, st, &bufs[w])
		} else {
			m.upload(ctx, w, st)
		}
		return true
	})
}

func (e *ltEnv) mediaScenario(ctx context.Context, users []*ltUser, rep *Report) error {
	m := &ltMediaRun{e: e, users: users, base: make([]byte, e.opts.MediaBytes)}
	if _, err := rand.Read(m.base); err != nil {
		return fmt.Errorf("random file: %w", err)
	}
	mr := &ltMediaReport{Bytes: e.opts.MediaBytes, Workers: e.opts.Workers}
	rep.Media = mr
	if e.opts.Warmup > 0 {
		e.logf("warm-up %s: uploads, then downloads", e.opts.Warmup)
		m.phase(ctx, e.opts.Warmup/2, false, newOpStats())
		if len(m.files) > 0 {
			m.phase(ctx, e.opts.Warmup/2, true, newOpStats())
		}
	}
	half := e.opts.Duration / 2
	up, down := newOpStats(), newOpStats()
	var cpu [3]float64
	var haveCPU [3]bool
	e.logf("uploading %d-byte files on %d worker(s) for %s, then downloading them for %s", e.opts.MediaBytes, e.opts.Workers, half, half)
	mr.WindowSeconds = e.measured(ctx, rep, func(ctx context.Context) ltWork {
		cpu[0], haveCPU[0] = e.serverCPU(ctx)
		t0 := time.Now()
		m.phase(ctx, half, false, up)
		mr.Upload.Seconds = time.Since(t0).Seconds()
		cpu[1], haveCPU[1] = e.serverCPU(ctx)
		if len(m.files) == 0 {
			return ltWork{}
		}
		t1 := time.Now()
		m.phase(ctx, half, true, down)
		mr.Download.Seconds = time.Since(t1).Seconds()
		cpu[2], haveCPU[2] = e.serverCPU(ctx)
		return ltWork{}
	})
	const mib = 1 << 20
	for i, ph := range []*ltMediaPhase{&mr.Upload, &mr.Download} {
		st := []*ltSendStats{up, down}[i]
		ph.Requests = opReport(st, ph.Seconds)
		if ph.Seconds > 0 {
			ph.MiBPerSecond = float64(ph.Requests.OK) * float64(e.opts.MediaBytes) / mib / ph.Seconds
		}
		if haveCPU[i] && haveCPU[i+1] {
			ph.ServerCPUSeconds = fp(cpu[i+1] - cpu[i])
			if ph.Requests.OK > 0 {
				ph.ServerCPUMsPerOp = fp(1000 * (cpu[i+1] - cpu[i]) / float64(ph.Requests.OK))
			}
		}
	}
	mr.Corrupt = m.corrupt
	if len(m.files) == 0 {
		rep.note("no upload succeeded, so nothing was downloaded: %s", fmtCounts(mr.Upload.Requests.Errors))
		return fmt.Errorf("media: no upload succeeded")
	}
	if mr.Corrupt > 0 {
		rep.note("%d downloads differed from what was uploaded", mr.Corrupt)
	}
	return ctx.Err()
}

func writeMedia(p func(string, ...any), m *ltMediaReport) {
	p("Media: %d-byte files (%.2f MiB), %d worker(s), measured window %.1f s", m.Bytes, float64(m.Bytes)/(1<<20), m.Workers, m.WindowSeconds)
	for _, ph := range []struct {
		name string
		r    ltMediaPhase
	}{{"upload  ", m.Upload}, {"download", m.Download}} {
		line := fmt.Sprintf("  %s %.1f s: %.1f MiB/s; %s", ph.name, ph.r.Seconds, ph.r.MiBPerSecond, fmtOp(ph.r.Requests))
		if ph.r.ServerCPUMsPerOp != nil {
			line += fmt.Sprintf("; server CPU %.2f ms per request", *ph.r.ServerCPUMsPerOp)
		}
		p("%s", line)
	}
	p("  DOWNLOADS DIFFERING FROM THEIR UPLOAD %d", m.Corrupt)
}
