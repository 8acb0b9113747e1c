package backup

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// ManifestName is the manifest's file name in a backup folder.
const ManifestName = "manifest.json"

// DatabaseFile is the database copy's file name in a backup folder.
const DatabaseFile = "haven.db"

// FormatVersion is the version of the backup folder's layout a full
// backup is written in; an incremental with a database delta is written in
// DeltaFormat (older Havens refuse it rather than misread it). Both are read.
const FormatVersion = 1

// DeltaFormat is the layout of an incremental backup holding a database delta.
const DeltaFormat = 2

// PageHashesFile lists the SHA-256 of each page of the database file a
// backup restores (32 bytes a page, in page order): the next incremental
// compares its pages with them.
const PageHashesFile = "pages.sha256"

// PageDeltaFile holds an incremental's changed database pages: records of
// a 4-byte big-endian page number and the page's bytes.
const PageDeltaFile = "haven.db.pages"

// TableDeltaFile holds an incremental's changed tables (the PostgreSQL
// method): an SQLite file at the backup's schema with only those tables' rows.
const TableDeltaFile = "tables.db"

// Kinds of backup.
const (
	Full        = "full"
	Incremental = "incremental"
)

// Manifest describes one backup folder: what it holds, with checksums, and
// the database positions it covers.
type Manifest struct {
	Format       int       `json:"format"`
	ID           string    `json:"id"`
	Kind         string    `json:"kind"`
	Created      time.Time `json:"created"`
	HavenVersion string    `json:"haven_version,omitempty"`
	ServerName   string    `json:"server_name,omitempty"`
	// Chain names the earlier backups (oldest first, a full one first)
	// whose media an incremental builds on; empty for a full backup.
	Chain    []string `json:"chain,omitempty"`
	Database Database `json:"database"`
	Counts   Counts   `json:"counts"`
	Files    []File   `json:"files"`
	Media    []Media  `json:"media"`
	Secrets  []string `json:"secrets"`
	Duration string   `json:"duration,omitempty"`
	// Paced is the rate the backup read at, how much it read (database and
	// media), and the time it waited for it.
	Paced string `json:"paced,omitempty"`
}

// Database describes the database copy.
type Database struct {
	// Engine is the database the backup was taken from (sqlite or postgres).
	Engine string `json:"engine"`
	// Method is how the copy was taken: "pages" (SQLite: every page read
	// in one read transaction), "vacuum-into" (SQLite, older backups and
	// builds without the sqlite_dbpage table) or "repeatable-read-copy"
	// (PostgreSQL, every table in one snapshot).
	Method string `json:"method"`
	// File is the whole database copy; empty for an incremental that holds
	// a delta (Delta) instead.
	File          string `json:"file"`
	SchemaVersion int    `json:"schema_version"`
	// Positions are each stream's highest position in the copy.
	Positions map[string]int64 `json:"positions"`
	// SHA256 and Size are those of the whole database file this backup
	// restores (for an incremental: once its chain is applied); PageSize
	// and Pages its page size and count, PageHashes the file of its page
	// checksums (PageHashesFile). Set for the "pages" method.
	SHA256     string `json:"sha256,omitempty"`
	Size       int64  `json:"size,omitempty"`
	PageSize   int    `json:"page_size,omitempty"`
	Pages      int64  `json:"pages,omitempty"`
	PageHashes string `json:"page_hashes,omitempty"`
	// Tables are the checksums of each table's rows in the database this
	// backup restores (the PostgreSQL method: tableSum).
	Tables map[string]string `json:"tables,omitempty"`
	// Tops are the highest positions of the tables with a pos column
	// (the table method), and Appended the tables an incremental holds
	// only the rows above its base's Tops of.
	Tops     map[string]int64 `json:"tops,omitempty"`
	Appended map[string]int64 `json:"appended,omitempty"`
	// Delta is an incremental's file of what changed since Base, the last
	// backup of its chain: PageDeltaFile (the pages whose checksum
	// differs) or TableDeltaFile (the tables whose checksum differs).
	Delta string `json:"delta,omitempty"`
	// Base and BaseSHA256 name the backup the delta applies to and the
	// checksum of the database it restores (BaseTables for the table
	// method): a chain whose link was replaced is refused.
	Base       string `json:"base,omitempty"`
	BaseSHA256 string `json:"base_sha256,omitempty"`
	// ChangedPages and ChangedTables are what the delta holds.
	ChangedPages  int64    `json:"changed_pages,omitempty"`
	ChangedTables []string `json:"changed_tables,omitempty"`
}

// Counts are figures of the database copy, checked by verify.
type Counts struct {
	Users  int64 `json:"users"`
	Rooms  int64 `json:"rooms"`
	Events int64 `json:"events"`
	Media  int64 `json:"media"`
}

// File is a file of this backup folder.
type File struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// Secret marks files that hold secrets (the database holds the signing
	// key, password hashes and access tokens; the config may hold the
	// database password and shared secrets): keep the backup private.
	Secret bool   `json:"secret,omitempty"`
	Note   string `json:"note,omitempty"`
}

// Media is a media file (relative to the media folder) and the backup
// folder of the chain that holds its copy.
type Media struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	In     string `json:"in"`
}

// ReadManifest reads the manifest of a backup folder.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return m, fmt.Errorf("read manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: not a backup manifest: %w", filepath.Join(dir, ManifestName), err)
	}
	if m.Format != FormatVersion && m.Format != DeltaFormat {
		return m, fmt.Errorf("%s: backup format %d, this Haven reads formats %d and %d", filepath.Join(dir, ManifestName), m.Format, FormatVersion, DeltaFormat)
	}
	return m, nil
}

func writeManifest(dir string, m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileSync(filepath.Join(dir, ManifestName), append(b, '\n'))
}

func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Set is a backup to restore or verify: the backup itself and the folders
// of its chain, by ID.
type Set struct {
	Manifest Manifest
	Dir      string
	Folders  map[string]string
}

// ErrNoBackup means a folder holds no backup.
var ErrNoBackup = errors.New("no backup found")

// listBackups returns the backup folders directly under root, oldest first.
func listBackups(root string) ([]Manifest, []string, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, nil, err
	}
	var ms []Manifest
	var dirs []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		d := filepath.Join(root, e.Name())
		if _, err := os.Stat(filepath.Join(d, ManifestName)); err != nil {
			continue // unfinished or foreign
		}
		m, err := ReadManifest(d)
		if err != nil {
			return nil, nil, err
		}
		ms = append(ms, m)
		dirs = append(dirs, d)
	}
	idx := make([]int, len(ms))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return ms[idx[a]].ID < ms[idx[b]].ID })
	sm, sd := make([]Manifest, len(ms)), make([]string, len(ms))
	for i, j := range idx {
		sm[i], sd[i] = ms[j], dirs[j]
	}
	return sm, sd, nil
}

// Resolve finds the backup a path names: a backup folder (with its chain
// in the folder above it), or a folder of backups (its newest one).
func Resolve(path string) (Set, error) {
	if _, err := os.Stat(filepath.Join(path, ManifestName)); err == nil {
		m, err := ReadManifest(path)
		if err != nil {
			return Set{}, err
		}
		s := Set{Manifest: m, Dir: path, Folders: map[string]string{m.ID: path}}
		if len(m.Chain) > 0 {
			parent := filepath.Dir(filepath.Clean(path))
			for _, id := range m.Chain {
				d := filepath.Join(parent, id)
				if _, err := os.Stat(filepath.Join(d, ManifestName)); err != nil {
					return Set{}, fmt.Errorf("the chain of backup %s is broken: it builds on %s, which is not in %s; restore an earlier backup of the chain, or take a full one", m.ID, id, parent)
				}
				s.Folders[id] = d
			}
		}
		return s, nil
	}
	ms, dirs, err := listBackups(path)
	if err != nil {
		return Set{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(ms) == 0 {
		return Set{}, fmt.Errorf("%s: %w (no folder with a %s)", path, ErrNoBackup, ManifestName)
	}
	return Resolve(dirs[len(dirs)-1])
}

// Newest returns the manifest of the newest backup under root (for the
// backup-age check); ErrNoBackup when there is none.
func Newest(root string) (Manifest, error) {
	ms, _, err := listBackups(root)
	if err != nil {
		return Manifest{}, err
	}
	if len(ms) == 0 {
		return Manifest{}, ErrNoBackup
	}
	return ms[len(ms)-1], nil
}

// newID names a new backup folder: its UTC time (so names sort in time
// order) and its kind.
func newID(now time.Time, kind string) string {
	k := "full"
	if kind == Incremental {
		k = "incr"
	}
	return strings.ReplaceAll(now.UTC().Format("20060102T150405.000Z"), ".", "") + "-" + k
}
