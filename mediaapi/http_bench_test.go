package mediaapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/haven-chat/haven/clientapi"
	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/mediaapi"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/userapi"
)

// The same figures end to end: HTTP on loopback, the real router, auth
// middleware and handlers (the access token check is a stub).

type benchAuth struct{}

func (benchAuth) Authenticate(ctx context.Context, token string) (userapi.Device, error) {
	return userapi.Device{UserID: "@bench:bench.local", DeviceID: "BENCH"}, nil
}

func benchServer(b *testing.B) string {
	b.Helper()
	db := storagetest.Open(b, storage.SQLite)
	cfg := config.Default()
	cfg.ServerName = "bench.local"
	svc, err := mediaapi.New(context.Background(), db, mediaapi.Options{ServerName: cfg.ServerName, Dir: filepath.Join(b.TempDir(), "media")})
	if err != nil {
		b.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	api := &clientapi.API{Cfg: cfg, Log: log, Auth: benchAuth{}}
	api.Areas = append(api.Areas, api.MediaArea(svc))
	srv := httptest.NewServer(api.Router())
	b.Cleanup(srv.Close)
	return srv.URL
}

func benchUpload(b *testing.B, base string, data []byte) string {
	req, _ := http.NewRequest("POST", base+"/_matrix/media/v3/upload?filename=f.bin", bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer x")
	req.Header.Set("Content-Type", "application/octet-stream")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != 200 {
		b.Fatalf("upload: %d %v", res.StatusCode, err)
	}
	return out.ContentURI
}

// BenchmarkHTTPUpload1MiB: POST /_matrix/media/v3/upload of distinct 1 MiB files.
func BenchmarkHTTPUpload1MiB(b *testing.B) {
	base := benchServer(b)
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.LittleEndian.PutUint64(data, uint64(i))
		benchUpload(b, base, data)
	}
}

// BenchmarkHTTPDownload1MiB: GET /_matrix/client/v1/media/download of a 1 MiB file.
func BenchmarkHTTPDownload1MiB(b *testing.B) {
	base := benchServer(b)
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	uri := benchUpload(b, base, data)
	u := base + "/_matrix/client/v1/media/download/" + strings.TrimPrefix(uri, "mxc://")
	buf := make([]byte, 64<<10)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Authorization", "Bearer x")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, res.Body, buf)
		res.Body.Close()
		if err != nil || n != 1<<20 || res.StatusCode != 200 {
			b.Fatalf("download: %d, %d bytes, %v", res.StatusCode, n, err)
		}
	}
}
