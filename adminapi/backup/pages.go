package backup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/haven-chat/haven/storage"
)

// The SQLite database is copied page by page: every page read through
// SQLite's sqlite_dbpage table inside one read transaction (so the copy
// is the database as of one commit, and in WAL mode the server's writer
// is never held), in batches paced by the backup's rate. Each page's
// SHA-256 goes into the backup's PageHashesFile. A full backup writes the
// pages as they come (the copy is the live file, byte for byte, as of
// that commit); an incremental writes only the pages whose checksum
// differs from its base's, and the restore lays them over the chain's
// database, then checks the whole file's checksum.

// errNoDBPage means this SQLite build has no sqlite_dbpage table.
var errNoDBPage = errors.New("no sqlite_dbpage table")

// pageWriter takes a database's pages in order and writes the backup's
// database file (full) or page delta (incremental).
type pageWriter struct {
	pageSize int
	base     []byte // the base's page hashes (incremental), 32 bytes a page
	pages    int64
	changed  int64
	hashes   bytes.Buffer
	whole    hash.Hash // of the whole database file
	out      *os.File
	buf      *bufio.Writer
	outHash  hash.Hash // of the file written
	outSize  int64
}

func newPageWriter(path string, pageSize int, base []byte) (*pageWriter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	return &pageWriter{pageSize: pageSize, base: base, whole: sha256.New(), out: f, buf: bufio.NewWriterSize(&steadyWriter{f: f}, 1<<20), outHash: sha256.New()}, nil
}

func (w *pageWriter) write(b []byte) error {
	w.outHash.Write(b)
	w.outSize += int64(len(b))
	_, err := w.buf.Write(b)
	return err
}

func (w *pageWriter) page(data []byte) error {
	if len(data) != w.pageSize {
		return fmt.Errorf("page %d is %d bytes, the page size is %d", w.pages+1, len(data), w.pageSize)
	}
	w.pages++
	w.whole.Write(data)
	h := sha256.Sum256(data)
	w.hashes.Write(h[:])
	if w.base == nil {
		return w.write(data)
	}
	i := (w.pages - 1) * sha256.Size
	if i+sha256.Size <= int64(len(w.base)) && bytes.Equal(w.base[i:i+sha256.Size], h[:]) {
		return nil
	}
	w.changed++
	var no [4]byte
	binary.BigEndian.PutUint32(no[:], uint32(w.pages))
	if err := w.write(no[:]); err != nil {
		return err
	}
	return w.write(data)
}

// close flushes and syncs the file written.
func (w *pageWriter) close() error {
	err := w.buf.Flush()
	if err == nil {
		err = w.out.Sync()
	}
	if err == nil {
		dropCache(w.out)
	}
	if cerr := w.out.Close(); err == nil {
		err = cerr
	}
	return err
}

// baseHashes reads and checks the page hashes of the backup an
// incremental builds on.
func baseHashes(base Manifest, baseDir string) ([]byte, error) {
	fresh := fmt.Sprintf("the last backup, %s, ", base.ID)
	if base.Database.PageHashes == "" || base.Database.PageSize == 0 {
		return nil, fmt.Errorf("%shas no page checksums (taken by an older Haven, or by a build without SQLite's sqlite_dbpage table): take a full backup first (without --incremental)", fresh)
	}
	var want *File
	for i := range base.Files {
		if base.Files[i].Path == base.Database.PageHashes {
			want = &base.Files[i]
		}
	}
	b, err := os.ReadFile(filepath.Join(baseDir, filepath.FromSlash(base.Database.PageHashes)))
	if err != nil {
		return nil, fmt.Errorf("%scannot be built on: %w; take a full backup (without --incremental)", fresh, err)
	}
	s := sha256.Sum256(b)
	if want == nil || hex.EncodeToString(s[:]) != want.SHA256 || int64(len(b)) != base.Database.Pages*sha256.Size {
		return nil, fmt.Errorf("%scannot be built on: its %s does not match its manifest; take a full backup (without --incremental)", fresh, base.Database.PageHashes)
	}
	return b, nil
}

// copySQLite copies a live SQLite database into dir: the whole file
// (base nil) or the pages that changed since base.
func copySQLite(ctx context.Context, t storage.Target, dir string, base *Manifest, baseDir string, m *Manifest, pace *pacer, progress func(Progress)) error {
	var baseSums []byte
	if base != nil {
		var err error
		if baseSums, err = baseHashes(*base, baseDir); err != nil {
			return err
		}
	}
	src, _, err := openSource(ctx, t)
	if err != nil {
		return err
	}
	defer src.Close()
	m.Database.Engine = t.Dialect.String()
	name := DatabaseFile
	if base != nil {
		name = PageDeltaFile
	}
	m.Database.Method = "pages"
	var w *pageWriter
	err = src.ReadSnapshot(ctx, func(tx *storage.ReadTx) error {
		var pageSize int
		var count int64
		if err := tx.QueryRow(ctx, `PRAGMA page_size`).Scan(&pageSize); err != nil {
			return fmt.Errorf("page size: %w", err)
		}
		if err := tx.QueryRow(ctx, `PRAGMA page_count`).Scan(&count); err != nil {
			return fmt.Errorf("page count: %w", err)
		}
		if base != nil && base.Database.PageSize != pageSize {
			return fmt.Errorf("the database's page size is %d, the last backup's (%s) %d: take a full backup (without --incremental)", pageSize, base.ID, base.Database.PageSize)
		}
		rows, err := tx.Query(ctx, `SELECT pgno, data FROM sqlite_dbpage`)
		if err != nil {
			if strings.Contains(err.Error(), "no such table") {
				return errNoDBPage
			}
			return fmt.Errorf("read pages: %w", err)
		}
		defer rows.Close()
		if w, err = newPageWriter(filepath.Join(dir, name), pageSize, baseSums); err != nil {
			return err
		}
		var data []byte
		var no int64
		for rows.Next() {
			if err := rows.Scan(&no, &data); err != nil {
				return fmt.Errorf("read pages: %w", err)
			}
			if no != w.pages+1 {
				return fmt.Errorf("read pages: page %d after page %d", no, w.pages)
			}
			if err := w.page(data); err != nil {
				return err
			}
			if w.pages%64 == 0 { // paced by 64 pages (256 KiB at 4 KiB a page)
				if err := pace.wait(ctx, 64*pageSize); err != nil {
					return err
				}
			}
			if w.pages%256 == 0 || w.pages == count {
				progress(Progress{Phase: "database", Done: w.pages * int64(pageSize), Total: count * int64(pageSize), Unit: "bytes"})
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read pages: %w", err)
		}
		if w.pages != count {
			return fmt.Errorf("read pages: %d of %d", w.pages, count)
		}
		rows.Close()
		return describe(ctx, tx, m)
	})
	if w != nil {
		if cerr := w.close(); err == nil {
			err = cerr
		}
	}
	if errors.Is(err, errNoDBPage) {
		return copySQLiteVacuum(ctx, src, dir, name, baseSums, base, m, pace, progress)
	}
	if err != nil {
		return err
	}
	return finishPages(dir, name, w, base, m)
}

// copySQLiteVacuum is the copy of a build without sqlite_dbpage: VACUUM
// INTO a scratch file (not paced), whose pages are then taken as above.
// VACUUM rewrites the file compactly, so a table that grows moves the
// pages after it and an incremental holds more pages.
func copySQLiteVacuum(ctx context.Context, src *storage.DB, dir, name string, baseSums []byte, base *Manifest, m *Manifest, pace *pacer, progress func(Progress)) error {
	m.Database.Method = "vacuum-into"
	tmp := filepath.Join(dir, "vacuum.tmp")
	defer os.Remove(tmp)
	if err := src.CopyInto(ctx, tmp); err != nil {
		return err
	}
	if err := describeCopy(ctx, tmp, m); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err != nil {
		return err
	}
	defer f.Close()
	var head [100]byte
	if _, err := io.ReadFull(f, head[:]); err != nil {
		return fmt.Errorf("read the copy: %w", err)
	}
	pageSize := int(binary.BigEndian.Uint16(head[16:18]))
	if pageSize == 1 {
		pageSize = 65536
	}
	if base != nil && base.Database.PageSize != pageSize {
		return fmt.Errorf("the database's page size is %d, the last backup's (%s) %d: take a full backup (without --incremental)", pageSize, base.ID, base.Database.PageSize)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	w, err := newPageWriter(filepath.Join(dir, name), pageSize, baseSums)
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	data := make([]byte, pageSize)
	for {
		_, err := io.ReadFull(r, data)
		if err == io.EOF {
			break
		}
		if err == nil {
			err = w.page(data)
		}
		if err == nil {
			err = pace.wait(ctx, pageSize)
		}
		if err != nil {
			w.close()
			return fmt.Errorf("read the copy: %w", err)
		}
	}
	if err := w.close(); err != nil {
		return err
	}
	return finishPages(dir, name, w, base, m)
}

// finishPages records the pages copied in the manifest and writes the
// page hashes.
func finishPages(dir, name string, w *pageWriter, base *Manifest, m *Manifest) error {
	m.Database.PageSize = w.pageSize
	m.Database.Pages = w.pages
	m.Database.Size = w.pages * int64(w.pageSize)
	m.Database.SHA256 = hex.EncodeToString(w.whole.Sum(nil))
	f := File{Path: name, SHA256: hex.EncodeToString(w.outHash.Sum(nil)), Size: w.outSize, Secret: true}
	if base == nil {
		m.Database.File = name
		f.Note = "database copy (" + m.Database.Method + ")"
	} else {
		m.Database.Delta = name
		m.Database.Base = base.ID
		m.Database.BaseSHA256 = base.Database.SHA256
		m.Database.ChangedPages = w.changed
		f.Note = fmt.Sprintf("the %d of %d database pages that changed since backup %s", w.changed, w.pages, base.ID)
	}
	m.Files = append(m.Files, f)
	if err := writeFileSync(filepath.Join(dir, PageHashesFile), w.hashes.Bytes()); err != nil {
		return fmt.Errorf("write page checksums: %w", err)
	}
	s := sha256.Sum256(w.hashes.Bytes())
	m.Files = append(m.Files, File{Path: PageHashesFile, SHA256: hex.EncodeToString(s[:]), Size: int64(w.hashes.Len()), Note: "SHA-256 of each database page"})
	m.Database.PageHashes = PageHashesFile
	return nil
}

// applyPages lays an incremental's page delta over the database file f
// and cuts it to the incremental's page count.
func applyPages(f *os.File, delta string, pageSize int, pages int64) error {
	d, err := os.Open(delta)
	if err != nil {
		return err
	}
	defer d.Close()
	r := bufio.NewReaderSize(d, 1<<20)
	rec := make([]byte, 4+pageSize)
	for {
		_, err := io.ReadFull(r, rec)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", delta, err)
		}
		no := int64(binary.BigEndian.Uint32(rec[:4]))
		if no < 1 || no > pages {
			return fmt.Errorf("%s: page %d out of range (1 to %d)", delta, no, pages)
		}
		if _, err := f.WriteAt(rec[4:], (no-1)*int64(pageSize)); err != nil {
			return err
		}
	}
	return f.Truncate(pages * int64(pageSize))
}
