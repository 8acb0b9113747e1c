package syncapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	"github.com/haven-chat/haven/internal/bus"
	"github.com/haven-chat/haven/internal/serverkey"
	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
	"github.com/haven-chat/haven/syncapi"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/keys"
)

type accountData struct{ *userapi.Service }

func (a accountData) AccountDataSince(ctx context.Context, userID string, after, upto int64) ([]syncapi.AccountDataItem, error) {
	items, err := a.Service.AccountDataSince(ctx, userID, after, upto)
	out := make([]syncapi.AccountDataItem, len(items))
	for i, it := range items {
		out[i] = syncapi.AccountDataItem{RoomID: it.RoomID, Type: it.Type, Content: it.Content}
	}
	return out, err
}

type world struct {
	rooms *roomserver.Service
	sync  *syncapi.Service
	users *userapi.Service
}

func newWorld(tb testing.TB, d storage.Dialect) *world {
	tb.Helper()
	w, _ := worldOn(tb, storagetest.Open(tb, d), false)
	return w
}

// worldOn starts the services on db, with a new bus; withKeys adds the key
// service (returned), told of devices by the user API and read by /sync.
func worldOn(tb testing.TB, db *storage.DB, withKeys bool) (*world, *keys.Service) {
	return worldWith(tb, db, withKeys, nil)
}

// publisher is how the roomserver reaches the bus.
type publisher interface {
	Publish(topic string, data []byte) error
}

// worldWith is worldOn where roomBus, when set, stands between the
// roomserver and the bus.
func worldWith(tb testing.TB, db *storage.DB, withKeys bool, roomBus func(*bus.Bus) publisher) (*world, *keys.Service) {
	tb.Helper()
	ctx := context.Background()
	b, err := bus.Start(ctx, bus.Options{StoreDir: tb.TempDir(), Namespace: "bench"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Close)
	key, err := serverkey.Load(ctx, db)
	if err != nil {
		tb.Fatal(err)
	}
	uo := userapi.Options{ServerName: "test", PasswordHashCost: 4}
	var so syncapi.Options
	var ks *keys.Service
	if withKeys {
		if ks, err = keys.New(ctx, db, b, keys.Options{ServerName: "test"}); err != nil {
			tb.Fatal(err)
		}
		if err := ks.Start(ctx); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(ks.Close)
		uo.DeviceLists, so.Keys = ks, ks
	}
	us, err := userapi.New(ctx, db, b, uo)
	if err != nil {
		tb.Fatal(err)
	}
	var rb publisher = b
	if roomBus != nil {
		rb = roomBus(b)
	}
	rs, err := roomserver.New(ctx, db, rb, us, nil, roomserver.Options{ServerName: "test", Key: key})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(rs.Close)
	ss, err := syncapi.New(ctx, db, b, rs, accountData{us}, so)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(ss.Close)
	return &world{rooms: rs, sync: ss, users: us}, ks
}

// settle waits until the sync engine has seen every committed event (they
// arrive through the bus, within microseconds).
// settle waits until the sync engine has seen every committed event and
// the search index holds them (so that no background query follows).
func (w *world) settle() {
	for w.sync.Notifier().Current().Events < w.rooms.Position() {
		runtime.Gosched()
	}
	if err := w.rooms.FlushSearchIndex(context.Background()); err != nil {
		panic(err)
	}
}

func lazyOpts() *syncapi.Opts {
	o := syncapi.DefaultOpts()
	o.TimelineLimit, o.LazyMembers = 20, true
	return o
}

// BenchmarkIncrementalSync measures one message into a room of ten members
// and the ten incremental /sync responses that deliver it.
func BenchmarkIncrementalSync(b *testing.B) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		b.Run(d.String(), func(b *testing.B) {
			w := newWorld(b, d)
			ctx := context.Background()
			var members []string
			for i := 0; i < 10; i++ {
				members = append(members, fmt.Sprintf("@u%d:test", i))
			}
			res, err := w.rooms.CreateRoom(ctx, members[0], roomserver.CreateRoomRequest{Preset: "public_chat"})
			if err != nil {
				b.Fatal(err)
			}
			for _, u := range members[1:] {
				if _, err := w.rooms.Join(ctx, u, res.RoomID, ""); err != nil {
					b.Fatal(err)
				}
			}
			w.settle()
			tokens := make([]string, len(members))
			for i, u := range members {
				r, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: u, DeviceID: "D", Opts: lazyOpts()})
				if err != nil {
					b.Fatal(err)
				}
				tokens[i] = r.NextBatch
			}
			content := json.RawMessage(`{"msgtype":"m.text","body":"a message of ordinary length"}`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := w.rooms.Send(ctx, roomserver.Sender{UserID: members[i%10], DeviceID: "D"}, roomserver.SendRequest{RoomID: res.RoomID, Type: "m.room.message", Content: content, TxnID: fmt.Sprint(i)}); err != nil {
					b.Fatal(err)
				}
				w.settle()
				for j, u := range members {
					r, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: u, DeviceID: "D", Since: tokens[j], Opts: lazyOpts()})
					if err != nil {
						b.Fatal(err)
					}
					if len(r.Rooms.Join) != 1 {
						b.Fatalf("sync of %s has %d rooms", u, len(r.Rooms.Join))
					}
					if _, err := json.Marshal(r); err != nil {
						b.Fatal(err)
					}
					tokens[j] = r.NextBatch
				}
			}
		})
	}
}

// BenchmarkInitialSync measures a warm initial /sync (lazy-loaded members,
// timeline 20) of a user in 100 rooms of 20 messages each.
func BenchmarkInitialSync(b *testing.B) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		b.Run(d.String(), func(b *testing.B) {
			w := newWorld(b, d)
			ctx := context.Background()
			for r := 0; r < 100; r++ {
				res, err := w.rooms.CreateRoom(ctx, "@alice:test", roomserver.CreateRoomRequest{Preset: "public_chat", Name: ptr(fmt.Sprint("Room ", r))})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := w.rooms.Join(ctx, "@bob:test", res.RoomID, ""); err != nil {
					b.Fatal(err)
				}
				for m := 0; m < 20; m++ {
					sender := []string{"@alice:test", "@bob:test"}[m%2]
					if _, err := w.rooms.Send(ctx, roomserver.Sender{UserID: sender, DeviceID: "D"}, roomserver.SendRequest{RoomID: res.RoomID, Type: "m.room.message",
						Content: json.RawMessage(`{"msgtype":"m.text","body":"hello"}`), TxnID: fmt.Sprint(r, "-", m)}); err != nil {
						b.Fatal(err)
					}
				}
			}
			w.settle()
			if _, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: "@bob:test", DeviceID: "D", Opts: lazyOpts()}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r, err := w.sync.Sync(ctx, syncapi.SyncRequest{UserID: "@bob:test", DeviceID: "D", Opts: lazyOpts()})
				if err != nil {
					b.Fatal(err)
				}
				if len(r.Rooms.Join) != 100 {
					b.Fatalf("%d rooms", len(r.Rooms.Join))
				}
				if _, err := json.Marshal(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func ptr(s string) *string { return &s }

// eachWorld runs fn as two subtests, on SQLite and on PostgreSQL, each with
// the services started on a new database.
func eachWorld(t *testing.T, fn func(t *testing.T, w *world)) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		w, _ := worldOn(t, db, false)
		fn(t, w)
	})
}
