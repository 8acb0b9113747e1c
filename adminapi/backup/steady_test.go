package backup

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// TestSteadyWriter: what goes through a steadyWriter, in pieces of any
// size across its chunks, is the file's content, with every chunk but
// the last handed to the disk.
func TestSteadyWriter(t *testing.T) {
	for _, size := range []int{0, 1, steadyChunk - 1, steadyChunk, 3*steadyChunk + 12345} {
		data := make([]byte, size)
		rand.New(rand.NewSource(int64(size))).Read(data)
		p := filepath.Join(t.TempDir(), "f")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w := &steadyWriter{f: f}
		for rest, i := data, 0; len(rest) > 0; i++ {
			n := min(len(rest), 1+i*7919%300000)
			if m, err := w.Write(rest[:n]); err != nil || m != n {
				t.Fatalf("write: %d %v", m, err)
			}
			rest = rest[n:]
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		dropCache(f)
		f.Close()
		if got := w.started; got != int64(size/steadyChunk*steadyChunk) {
			t.Errorf("size %d: %d bytes handed to the disk", size, got)
		}
		back, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("size %d: content differs (%v)", size, err)
		}
	}
}
