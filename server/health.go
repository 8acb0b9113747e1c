package server

import (
	"context"
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
	return formatBytes(d.Free) + " free (" + itoa(d.Percent()) + " %)"
}

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

func formatBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return itoa(n>>30) + " GiB"
	case n >= 1<<20:
		return itoa(n>>20) + " MiB"
	default:
		return itoa(n>>10) + " KiB"
	}
}
