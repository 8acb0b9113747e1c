package mediaapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// fileStore keeps file contents under a folder, named by their SHA-256:
// <dir>/ab/cd/abcd.... A file appears under its name only once it is
// complete and on disk (written to a temporary file, fsynced, renamed), so
// a reader never sees half a file.
type fileStore struct {
	dir string
}

func newFileStore(dir string) (*fileStore, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("media folder %s: %w", dir, err)
	}
	return &fileStore{dir: dir}, nil
}

func validHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// path is where the file of a hash lives.
func (fs *fileStore) path(hash string) string {
	return filepath.Join(fs.dir, hash[0:2], hash[2:4], hash)
}

// errTooBig is returned by write when the content exceeds its limit.
var errTooBig = errors.New("content larger than the limit")

// staged is content written to a temporary file, not yet under its name.
type staged struct {
	tmp  string
	Hash string
	Size int64
}

// write copies r into a temporary file, at most limit bytes (errTooBig
// beyond), and syncs it to disk.
func (fs *fileStore) write(r io.Reader, limit int64) (_ *staged, err error) {
	f, err := os.CreateTemp(filepath.Join(fs.dir, "tmp"), "up-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary media file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("write media file: %w", err)
	}
	if n > limit {
		return nil, errTooBig
	}
	if err = f.Sync(); err != nil {
		return nil, fmt.Errorf("sync media file: %w", err)
	}
	if err = f.Close(); err != nil {
		return nil, fmt.Errorf("close media file: %w", err)
	}
	return &staged{tmp: f.Name(), Hash: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// writeBytes stages a byte slice (thumbnails).
func (fs *fileStore) writeBytes(b []byte) (*staged, error) {
	return fs.write(bytes.NewReader(b), int64(len(b)))
}

// commit moves staged content under its name. When a file with that hash is
// already there (an identical upload), the new copy is dropped. created
// tells whether this call put the file there. The caller holds the hash's lock.
func (fs *fileStore) commit(s *staged) (created bool, err error) {
	dst := fs.path(s.Hash)
	if st, err := os.Stat(dst); err == nil && st.Size() == s.Size {
		os.Remove(s.tmp)
		return false, nil
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		os.Remove(s.tmp)
		return false, fmt.Errorf("create media folder: %w", err)
	}
	if err := os.Rename(s.tmp, dst); err != nil {
		os.Remove(s.tmp)
		return false, fmt.Errorf("rename media file: %w", err)
	}
	// The rename itself must survive a crash before the row is written.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return true, nil
}

// discard drops staged content that will not be kept.
func (fs *fileStore) discard(s *staged) {
	if s != nil {
		os.Remove(s.tmp)
	}
}

// remove deletes the file of a hash (the caller has made sure nothing uses it).
func (fs *fileStore) remove(hash string) {
	if validHash(hash) {
		os.Remove(fs.path(hash))
	}
}

// exists tells whether the file of a hash is there with its size.
func (fs *fileStore) exists(hash string, size int64) bool {
	if !validHash(hash) {
		return false
	}
	st, err := os.Stat(fs.path(hash))
	return err == nil && st.Mode().IsRegular() && st.Size() == size
}

// open opens the file of a hash.
func (fs *fileStore) open(hash string) (*os.File, error) {
	if !validHash(hash) {
		return nil, fmt.Errorf("invalid content hash %q", hash)
	}
	return os.Open(fs.path(hash))
}

// sweepTmp removes temporary files last written before cutoff.
func (fs *fileStore) sweepTmp(cutoff time.Time) {
	dir := filepath.Join(fs.dir, "tmp")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && !e.IsDir() && info.ModTime().Before(cutoff) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
