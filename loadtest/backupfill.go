package loadtest

// Filling a server with data for the backup benchmarks
// (scripts/bench-backup.sh, docs/benchmarks.md "Backup and restore").
//
// Two stages. FillThroughAPI runs against a serving Haven: it registers
// users (shared-secret registration), creates rooms, joins members, sends
// one message in each room, and uploads media files of mixed sizes until
// the media reaches its target; everything goes through the real write
// path. FillMessages runs on the stopped server's database: it adds
// message events to those rooms by bulk SQL into the roomserver's own
// tables (events, prev_events, room_extremities, rooms.depth,
// event_search, search_position), each event built from the room's real
// message event (same JSON shape and size, a new event ID, body,
// sender, depth, prev_events and position), until the database reaches
// its target size. The bulk events are stored as the roomserver would
// store them, but their IDs are not content hashes and their signatures
// are the template's: they serve clients (/sync, /messages, search) and
// backups, not federation.

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/haven-chat/haven/storage"
)

// FillAPIOptions say what FillThroughAPI creates.
type FillAPIOptions struct {
	HS, SharedSecret string
	Users, Rooms     int
	// Members is how many users join each room.
	Members    int
	MediaBytes int64
	Workers    int
	Out        io.Writer
}

// FillThroughAPI creates users, rooms with members and a message each,
// and media files, through the client API of a serving Haven.
func FillThroughAPI(ctx context.Context, o FillAPIOptions) error {
	c := newMXClient(o.HS, o.Workers*2)
	defer c.close()
	start := time.Now()
	users := make([]mxSession, o.Users)
	err := forEach(ctx, o.Users, o.Workers, func(ctx context.Context, i int) error {
		var err error
		users[i], err = c.registerSharedSecret(ctx, o.SharedSecret, fmt.Sprintf("fill%05d", i), "fill-password")
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "fill: %d users in %s\n", o.Users, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	err = forEach(ctx, o.Rooms, o.Workers, func(ctx context.Context, r int) error {
		creator := users[r%len(users)]
		room, err := c.createRoom(ctx, creator.AccessToken, map[string]any{"preset": "public_chat", "name": fmt.Sprintf("Fill room %d", r)})
		if err != nil {
			return err
		}
		for k := 1; k < o.Members; k++ {
			if err := c.join(ctx, users[(r+k*7)%len(users)].AccessToken, room); err != nil {
				return err
			}
		}
		return c.send(ctx, creator.AccessToken, room, fmt.Sprintf("fill-%d", r), map[string]any{"msgtype": "m.text", "body": "the first message of " + room})
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "fill: %d rooms of %d members in %s\n", o.Rooms, o.Members, time.Since(start).Round(time.Millisecond))
	if o.MediaBytes <= 0 {
		return nil
	}
	// Mixed sizes: mostly photos of 0.2 to 3 MiB, some 5 to 20 MiB files;
	// every file's bytes differ (media is stored by content hash).
	var sizes []int
	var total int64
	rng := rand.New(rand.NewPCG(1, 2))
	for total < o.MediaBytes {
		n := 200<<10 + rng.IntN(3<<20)
		if rng.IntN(10) == 0 {
			n = 5<<20 + rng.IntN(15<<20)
		}
		n = int(min(int64(n), o.MediaBytes-total+1024))
		sizes = append(sizes, n)
		total += int64(n)
	}
	start = time.Now()
	var done atomic.Int64
	err = forEach(ctx, len(sizes), o.Workers, func(ctx context.Context, i int) error {
		data := make([]byte, sizes[i])
		_, _ = rand.NewChaCha8([32]byte{byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24)}).Read(data)
		if _, err := c.uploadMedia(ctx, users[i%len(users)].AccessToken, fmt.Sprintf("file-%d.bin", i), data); err != nil {
			return err
		}
		if d := done.Add(int64(len(data))); i%100 == 0 {
			fmt.Fprintf(o.Out, "fill: media %d MiB of %d MiB\n", d>>20, total>>20)
		}
		return nil
	})
	if err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(o.Out, "fill: %d media files, %.1f MiB in %s (%.1f MiB/s)\n", len(sizes), float64(total)/(1<<20), el.Round(time.Millisecond), float64(total)/(1<<20)/el.Seconds())
	return nil
}

// FillDBOptions say how far FillMessages fills a database.
type FillDBOptions struct {
	Target storage.Target
	// Bytes is the database size to reach.
	Bytes int64
	Out   io.Writer
}

type fillRoom struct {
	id, lastEvent string
	depth         int64
	snapshot      int64
	members       []string
	template      map[string]any
}

// FillMessages adds message events to every room that has one, by bulk
// SQL, until the database is Bytes large. The server must be stopped.
func FillMessages(ctx context.Context, o FillDBOptions) error {
	db, err := storage.Connect(ctx, o.Target, storage.Options{MaxOpenConns: 2})
	if err != nil {
		return err
	}
	defer db.Close()
	rooms, err := fillRooms(ctx, db)
	if err != nil {
		return err
	}
	if len(rooms) == 0 {
		return fmt.Errorf("no room with a message: run the API stage first")
	}
	var pos int64
	if err := db.QueryRow(ctx, `SELECT COALESCE(MAX(pos), 0) FROM events`).Scan(&pos); err != nil {
		return err
	}
	size, err := dbSize(ctx, db)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "fill: database %.1f MiB, %d rooms, filling to %.1f MiB\n", float64(size)/(1<<20), len(rooms), float64(o.Bytes)/(1<<20))
	rng := rand.New(rand.NewPCG(3, 4))
	ts := time.Now().Add(-90 * 24 * time.Hour).UnixMilli()
	const batch = 2000
	start := time.Now()
	var added int64
	for size < o.Bytes {
		type row struct {
			pos              int64
			id, room, sender string
			depth, ts        int64
			snapshot         int64
			prev, body, js   string
		}
		rows := make([]row, 0, batch)
		for i := 0; i < batch; i++ {
			r := rooms[rng.IntN(len(rooms))]
			pos++
			ts += int64(rng.IntN(2000))
			r.depth++
			var idb [32]byte
			binary.BigEndian.PutUint64(idb[:], uint64(pos))
			binary.BigEndian.PutUint64(idb[8:], rng.Uint64())
			binary.BigEndian.PutUint64(idb[16:], rng.Uint64())
			binary.BigEndian.PutUint64(idb[24:], rng.Uint64())
			eid := "$" + base64.RawURLEncoding.EncodeToString(idb[:])
			sender := r.members[rng.IntN(len(r.members))]
			body := chatBody(rng)
			ev := make(map[string]any, len(r.template))
			for k, v := range r.template {
				ev[k] = v
			}
			ev["sender"], ev["depth"], ev["origin_server_ts"], ev["prev_events"] = sender, r.depth, ts, []string{r.lastEvent}
			ev["content"] = map[string]any{"msgtype": "m.text", "body": body}
			js, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			rows = append(rows, row{pos, eid, r.id, sender, r.depth, ts, r.snapshot, r.lastEvent, body, string(js)})
			r.lastEvent = eid
		}
		err := db.Write(ctx, func(tx *storage.Tx) error {
			for _, x := range rows {
				if _, err := tx.Exec(ctx, `INSERT INTO events (pos, event_id, room_id, type, state_key, sender, membership, depth, origin_ts,
snapshot_id, relates_to, rel_type, device_id, txn_id, json, topo) VALUES ($1,$2,$3,'m.room.message',NULL,$4,NULL,$5,$6,$7,NULL,NULL,NULL,NULL,$8,$5)`,
					x.pos, x.id, x.room, x.sender, x.depth, x.ts, x.snapshot, x.js); err != nil {
					return fmt.Errorf("insert event: %w", err)
				}
				if _, err := tx.Exec(ctx, `INSERT INTO prev_events (room_id, prev_event_id, event_id) VALUES ($1, $2, $3)`, x.room, x.prev, x.id); err != nil {
					return fmt.Errorf("insert prev_events: %w", err)
				}
				if _, err := tx.Exec(ctx, `INSERT INTO event_search (rowid, room_id, field, body) VALUES ($1, $2, 'content.body', $3)`, x.pos, x.room, x.body); err != nil {
					return fmt.Errorf("insert event_search: %w", err)
				}
			}
			for _, r := range rooms {
				if _, err := tx.Exec(ctx, `UPDATE room_extremities SET event_id = $1 WHERE room_id = $2`, r.lastEvent, r.id); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `UPDATE rooms SET depth = $1 WHERE room_id = $2`, r.depth, r.id); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, `UPDATE search_position SET pos = $1 WHERE id = 0`, pos)
			return err
		})
		if err != nil {
			return err
		}
		added += int64(len(rows))
		if added%(batch*5) == 0 {
			if size, err = dbSize(ctx, db); err != nil {
				return err
			}
			el := time.Since(start).Seconds()
			fmt.Fprintf(o.Out, "fill: %d events added, database %.1f MiB (%.0f events/s)\n", added, float64(size)/(1<<20), float64(added)/el)
		}
	}
	fmt.Fprintf(o.Out, "fill: %d events added in %s, database %.1f MiB, events position %d\n", added, time.Since(start).Round(time.Millisecond), float64(size)/(1<<20), pos)
	return nil
}

// fillRooms reads each room with a message: its newest message event (the
// template), its single forward extremity, depth, state snapshot and
// joined members.
func fillRooms(ctx context.Context, db *storage.DB) ([]*fillRoom, error) {
	rows, err := db.Query(ctx, `SELECT r.room_id, r.depth, r.snapshot_id, x.event_id, e.json FROM rooms r
JOIN room_extremities x ON x.room_id = r.room_id
JOIN events e ON e.pos = (SELECT MAX(pos) FROM events m WHERE m.room_id = r.room_id AND m.type = 'm.room.message')`)
	if err != nil {
		return nil, fmt.Errorf("list rooms: %w", err)
	}
	var out []*fillRoom
	seen := map[string]bool{}
	for rows.Next() {
		r := &fillRoom{}
		var js string
		if err := rows.Scan(&r.id, &r.depth, &r.snapshot, &r.lastEvent, &js); err != nil {
			rows.Close()
			return nil, err
		}
		if seen[r.id] {
			continue // more than one forward extremity: keep the first
		}
		seen[r.id] = true
		if err := json.Unmarshal([]byte(js), &r.template); err != nil {
			rows.Close()
			return nil, err
		}
		delete(r.template, "unsigned")
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, r := range out {
		if err := db.Write(ctx, func(tx *storage.Tx) error {
			if _, err := tx.Exec(ctx, `DELETE FROM room_extremities WHERE room_id = $1 AND event_id <> $2`, r.id, r.lastEvent); err != nil {
				return err
			}
			return nil
		}); err != nil {
			return nil, err
		}
		mrows, err := db.Query(ctx, `SELECT state_key FROM room_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`, r.id)
		if err != nil {
			return nil, fmt.Errorf("members of %s: %w", r.id, err)
		}
		for mrows.Next() {
			var m string
			if err := mrows.Scan(&m); err != nil {
				mrows.Close()
				return nil, err
			}
			r.members = append(r.members, m)
		}
		mrows.Close()
		if len(r.members) == 0 {
			return nil, fmt.Errorf("room %s has no joined member", r.id)
		}
	}
	return out, nil
}

var fillWords = strings.Fields(`the a to and of I you it is in that for on we this be with have are not at
can will just so but do what was all about if my meeting tomorrow deploy release review thanks ok yes no
please server backup restore build test link here there today lunch coffee call later sounds good`)

// chatBody is a message body of a typical length: mostly short chat lines,
// some paragraphs.
func chatBody(rng *rand.Rand) string {
	n := 3 + rng.IntN(15)
	if rng.IntN(10) == 0 {
		n = 40 + rng.IntN(120)
	}
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(fillWords[rng.IntN(len(fillWords))])
	}
	return b.String()
}

// dbSize is the database's size on disk: the SQLite file's pages, or the
// PostgreSQL schema's tables with their indexes.
func dbSize(ctx context.Context, db *storage.DB) (int64, error) {
	var n int64
	q := `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`
	if db.Dialect() == storage.Postgres {
		q = `SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')`
	}
	err := db.QueryRow(ctx, q).Scan(&n)
	return n, err
}
