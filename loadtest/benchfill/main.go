// Command benchfill fills a Haven server with data for the backup
// benchmarks (scripts/bench-backup.sh):
//
//	benchfill api --hs URL --shared-secret S [--users N --rooms N --members N --media-bytes B]
//	benchfill db  --database SETTING --data-dir DIR --bytes B
//
// "api" runs against a serving Haven (real write path: users, rooms,
// members, one message per room, media files); "db" runs on the stopped
// server's database and adds message events by bulk SQL until it reaches
// the size (see loadtest/backupfill.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/haven-chat/haven/loadtest"
	"github.com/haven-chat/haven/storage"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchfill api|db [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	fs := flag.NewFlagSet("benchfill "+os.Args[1], flag.ExitOnError)
	var err error
	switch os.Args[1] {
	case "api":
		o := loadtest.FillAPIOptions{Out: os.Stdout}
		fs.StringVar(&o.HS, "hs", "http://127.0.0.1:18008", "the server's client API")
		fs.StringVar(&o.SharedSecret, "shared-secret", "", "registration.shared_secret")
		fs.IntVar(&o.Users, "users", 1000, "users to register")
		fs.IntVar(&o.Rooms, "rooms", 200, "rooms to create")
		fs.IntVar(&o.Members, "members", 20, "members of each room")
		fs.Int64Var(&o.MediaBytes, "media-bytes", 5<<30, "total size of the media files to upload")
		fs.IntVar(&o.Workers, "workers", 8, "requests at once")
		_ = fs.Parse(os.Args[2:])
		err = loadtest.FillThroughAPI(ctx, o)
	case "db":
		setting := fs.String("database", "", "the database setting (empty: SQLite in --data-dir, or a postgres:// URL)")
		dataDir := fs.String("data-dir", "", "the server's data_dir")
		bytes := fs.Int64("bytes", 1<<30, "database size to reach")
		_ = fs.Parse(os.Args[2:])
		var t storage.Target
		if t, err = storage.ParseTarget(*setting, *dataDir); err == nil {
			err = loadtest.FillMessages(ctx, loadtest.FillDBOptions{Target: t, Bytes: *bytes, Out: os.Stdout})
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: benchfill api|db [flags]")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchfill:", err)
		os.Exit(1)
	}
}
