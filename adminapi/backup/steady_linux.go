//go:build linux

package backup

import (
	"os"

	"golang.org/x/sys/unix"
)

// writeback starts writing [off, off+n) of f to disk, waits until the
// chunk before it is written, and drops that one from the page cache.
// These are hints: errors are left to the file's final fsync.
func writeback(f *os.File, off, n int64) {
	fd := int(f.Fd())
	_ = unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WRITE)
	if off >= n {
		_ = unix.SyncFileRange(fd, off-n, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		_ = unix.Fadvise(fd, off-n, n, unix.FADV_DONTNEED)
	}
}

// dropCache drops a file's pages from the page cache (after its fsync,
// or a source read through once).
func dropCache(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// startWriteback starts writing all of f's dirty pages to disk.
func startWriteback(f *os.File) {
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
