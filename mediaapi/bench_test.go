package mediaapi

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// Benchmarks of the media path on SQLite (file store and metadata row,
// fsyncs included): go test -run '^$' -bench 'Upload|Download|Thumbnail' ./mediaapi/

const benchSize = 1 << 20

// BenchmarkUpload1MiB stores distinct 1 MiB uploads (no deduplication).
func BenchmarkUpload1MiB(b *testing.B) {
	db := storagetest.Open(b, storage.SQLite)
	s, _ := newTestService(b, db, Options{})
	ctx := context.Background()
	data := make([]byte, benchSize)
	_, _ = rand.Read(data)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.LittleEndian.PutUint64(data, uint64(i))
		if _, err := s.UploadNew(ctx, "@bench:test", up(data, "application/octet-stream", "f.bin")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDownload1MiB opens and reads a 1 MiB upload.
func BenchmarkDownload1MiB(b *testing.B) {
	db := storagetest.Open(b, storage.SQLite)
	s, _ := newTestService(b, db, Options{})
	ctx := context.Background()
	data := make([]byte, benchSize)
	_, _ = rand.Read(data)
	mxc, err := s.UploadNew(ctx, "@bench:test", up(data, "application/octet-stream", "f.bin"))
	if err != nil {
		b.Fatal(err)
	}
	id := mediaIDOf(b, mxc)
	buf := make([]byte, 64<<10)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := s.Download(ctx, testServer, id, "", 0)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, c.Body, buf)
		c.Close()
		if err != nil || n != benchSize {
			b.Fatalf("read %d: %v", n, err)
		}
	}
}

// BenchmarkThumbnailStandardSizes makes the five standard thumbnails of a
// 1600x1200 JPEG (one decode), as the first thumbnail request does.
func BenchmarkThumbnailStandardSizes(b *testing.B) {
	src := makeJPEG(b, 1600, 1200)
	info, err := probe(src, 50_000_000)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		img, err := decodeStill(src, info)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := stillThumbs(img, info, StandardSizes); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkThumbnailCached serves an already made thumbnail.
func BenchmarkThumbnailCached(b *testing.B) {
	db := storagetest.Open(b, storage.SQLite)
	s, _ := newTestService(b, db, Options{})
	ctx := context.Background()
	mxc, err := s.UploadNew(ctx, "@bench:test", up(makeJPEG(b, 1600, 1200), "image/jpeg", ""))
	if err != nil {
		b.Fatal(err)
	}
	id := mediaIDOf(b, mxc)
	req := ThumbnailRequest{Width: 320, Height: 240, Method: Scale}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := s.Thumbnail(ctx, testServer, id, req, 0)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, c.Body)
		c.Close()
	}
}
