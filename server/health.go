package server

import (
	"context"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/haven-chat/haven/clientapi"
)

// Disk space below which the server is not ready: writes would soon fail.
const (
	minFreeBytes   = 256 << 20
	minFreePercent = 2
)

// readiness checks what serving needs: the database answers, the bus is
// connected, and the data folder's disk has room.
type readiness struct{ a *App }

func (r readiness) Ready(ctx context.Context) []clientapi.Check {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var out []clientapi.Check
	start := time.Now()
	db := clientapi.Check{Name: "database", OK: true}
	if err := r.a.DB.Ping(ctx); err != nil {
		db.OK, db.Detail = false, "the database does not answer: "+err.Error()
	} else {
		db.Detail = "answers in " + time.Since(start).Round(time.Microsecond).String()
	}
	out = append(out, db)
	bus := clientapi.Check{Name: "nats", OK: true, Detail: "connected"}
	if st := r.a.Bus.Conn().Status(); st != nats.CONNECTED {
		bus.OK, bus.Detail = false, "the bus connection is "+st.String()
	}
	out = append(out, bus)
	disk := clientapi.Check{Name: "disk", OK: true}
	if d, err := Disk(r.a.Cfg.DataDir); err != nil {
		disk.OK, disk.Detail = false, "cannot read the data folder's disk: "+err.Error()
	} else {
		disk.Detail = d.String()
		if d.Free < minFreeBytes || d.Percent() < minFreePercent {
			disk.OK = false
			disk.Detail = "only " + disk.Detail + " on the data folder's disk"
		}
	}
	return append(out, disk)
}

// DiskSpace is the room on a folder's disk.
type DiskSpace struct{ Free, Total uint64 }

// Disk reads the room on the disk that holds dir.
func Disk(dir string) (DiskSpace, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return DiskSpace{}, err
	}
	return DiskSpace{Free: fs.Bavail * uint64(fs.Bsize), Total: fs.Blocks * uint64(fs.Bsize)}, nil
}

// Percent is the free share of the disk.
func (d DiskSpace) Percent() uint64 {
	if d.Total == 0 {
		return 100
	}
	return d.Free * 100 / d.Total
}

func (d DiskSpace) String() string {
	return formatBytes(d.Free) + " free (" + strconv.FormatUint(d.Percent(), 10) + " %)"
}

func formatBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatUint(n>>30, 10) + " GiB"
	case n >= 1<<20:
		return strconv.FormatUint(n>>20, 10) + " MiB"
	default:
		return strconv.FormatUint(n>>10, 10) + " KiB"
	}
}
