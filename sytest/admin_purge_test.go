package sytest

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/haven-chat/haven/storage"
)

// openServerDB opens the stopped server's database, without migrating it.
func (s *server) openServerDB(t *testing.T) *storage.DB {
	t.Helper()
	target := storage.Target{Dialect: storage.SQLite, Path: filepath.Join(s.dir, "data", "haven.db")}
	for _, kv := range s.env {
		if v, ok := strings.CutPrefix(kv, "HAVEN_DATABASE="); ok {
			var err error
			if target, err = storage.ParseTarget(v, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	db, err := storage.Connect(context.Background(), target, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// roomIDTables lists every table with a room_id column.
func roomIDTables(t *testing.T, db *storage.DB) []string {
	t.Helper()
	q := `SELECT table_name FROM information_schema.columns WHERE column_name = 'room_id' AND table_schema = current_schema()`
	if db.Dialect() == storage.SQLite {
		q = `SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) c WHERE m.type = 'table' AND c.name = 'room_id'`
	}
	rows, err := db.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// TestAdminPurgeLeavesNoRows: after a room is deleted with purge, no table
// of any package holds a row of it (receipts, search, room account data
// and tags, notification counts, key backups, reports, aliases …), also
// after the server stopped (no cache writes anything back).
func TestAdminPurgeLeavesNoRows(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		ctx := context.Background()
		admin := s.registerAdmin(t, "boss")
		alice := s.register(t, "alice")
		bob := s.register(t, "bob")
		carol := s.register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Gone", Preset: "public_chat", RoomAliasName: "gone", Visibility: "public"})
		other := createRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Stays", Preset: "public_chat"})
		for _, r := range []string{room.String(), other.String()} {
			join(t, bob, r)
		}
		join(t, carol, room.String())
		msg := sendText(t, alice, room, "searchable words @bob")
		sendText(t, alice, other, "kept words")
		if err := bob.SendReceipt(ctx, room, msg, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		if err := bob.AddTag(ctx, room, "u.work", 0.5); err != nil {
			t.Fatal(err)
		}
		if err := bob.SetRoomAccountData(ctx, room, "org.example.note", map[string]any{"n": 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.UserTyping(ctx, room, true, 30000); err != nil {
			t.Fatal(err)
		}
		s.do(t, "POST", "/_matrix/client/v3/rooms/"+p(room)+"/report/"+p(msg), bob.AccessToken, map[string]any{"reason": "spam"}).expect(t, 200)
		ver := s.do(t, "POST", "/_matrix/client/v3/room_keys/version", bob.AccessToken,
			map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "abc"}}).expect(t, 200).str("version")
		s.do(t, "PUT", "/_matrix/client/v3/room_keys/keys/"+p(room)+"?version="+ver, bob.AccessToken, map[string]any{"sessions": map[string]any{
			"sess1": map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{"ciphertext": "x"}}}}).expect(t, 200)
		if _, err := carol.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.ForgetRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		// Search finds the message before.
		search := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "searchable"}}}
		if r := s.do(t, "POST", "/_matrix/client/v3/search", bob.AccessToken, search).expect(t, 200); !strings.Contains(string(r.Raw), "searchable words") {
			t.Fatalf("search before: %s", r)
		}

		s.do(t, "DELETE", adm+"/v1/rooms/"+p(room), admin.AccessToken, map[string]any{"purge": true, "block": false}).expect(t, 200)
		if r := s.do(t, "POST", "/_matrix/client/v3/search", bob.AccessToken, search).expect(t, 200); strings.Contains(string(r.Raw), "searchable words") {
			t.Fatalf("search after: %s", r)
		}
		s.stop()

		db := s.openServerDB(t)
		tables := roomIDTables(t, db)
		if len(tables) < 15 {
			t.Fatalf("only %d tables with room_id: %v", len(tables), tables)
		}
		// Kept on purpose: the deletion's own status (admin_room_jobs, for
		// a day) and the block (room_blocks, with block: true).
		kept := map[string]bool{"admin_room_jobs": true, "room_blocks": true}
		otherRows := 0
		for _, table := range tables {
			if kept[table] {
				continue
			}
			var n int
			if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM `+table+` WHERE room_id = $1`, room.String()).Scan(&n); err != nil {
				t.Fatalf("%s: %v", table, err)
			}
			if n != 0 {
				t.Errorf("%s keeps %d rows of the purged room", table, n)
			}
			var m int
			if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM `+table+` WHERE room_id = $1`, other.String()).Scan(&m); err != nil {
				t.Fatalf("%s: %v", table, err)
			}
			otherRows += m
		}
		if otherRows == 0 {
			t.Fatal("the other room lost its rows too")
		}
	})
}
