package backup

import "os"

// A backup writes gigabytes. Left to the page cache, they reach the disk
// in bursts (at each file's fsync, or when the kernel's dirty limit is
// hit), and a burst holds up the serving server's own commits, whose
// fsyncs wait behind it: delivery p99 rose from 9 ms to 400 ms during a
// paced backup before this. steadyWriter hands its file's pages to the
// disk a chunk at a time as they are written, and waits for the chunk
// before (so at most two are dirty), then drops them from the page cache
// (a backup's bytes are not read again; the server's pages stay cached).
// On systems other than Linux it only writes.
type steadyWriter struct {
	f *os.File
	// off: bytes written; started: bytes handed to the disk.
	off, started int64
}

// steadyChunk is how much a backup writes between two hand-overs.
const steadyChunk = 1 << 20

func (w *steadyWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.off += int64(n)
	for w.off-w.started >= steadyChunk {
		writeback(w.f, w.started, steadyChunk)
		w.started += steadyChunk
	}
	return n, err
}

// fileKicker does for files another writer writes (SQLite's, for the
// PostgreSQL copy: the database and its WAL) what steadyWriter does for
// its own: each kick hands what is dirty of them to the disk, so the
// copy's final fsync has little left to write.
type fileKicker struct {
	paths []string
	files []*os.File
}

func newFileKicker(paths ...string) *fileKicker {
	return &fileKicker{paths: paths, files: make([]*os.File, len(paths))}
}

func (k *fileKicker) kick() {
	for i, p := range k.paths {
		if k.files[i] == nil {
			f, err := os.Open(p)
			if err != nil {
				continue // not there yet (the WAL)
			}
			k.files[i] = f
		}
		startWriteback(k.files[i])
	}
}

func (k *fileKicker) close() {
	for _, f := range k.files {
		if f != nil {
			f.Close()
		}
	}
}
