package mediaapi

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

func TestAdminMedia(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, clock := newTestService(t, db, Options{})
		id := func(mxc string) string { return mxc[strings.LastIndex(mxc, "/")+1:] }
		a1, err := s.UploadNew(ctx, "@alice:test", up([]byte("same bytes"), "text/plain", "one.txt"))
		if err != nil {
			t.Fatal(err)
		}
		clock.ms.Add(1000)
		a2, _ := s.UploadNew(ctx, "@alice:test", up([]byte("same bytes"), "text/plain", "two.txt"))
		clock.ms.Add(1000)
		a3, _ := s.UploadNew(ctx, "@alice:test", up([]byte("longer, other bytes"), "application/pdf", ""))
		if _, _, err := s.Create(ctx, "@alice:test"); err != nil { // pending: not listed
			t.Fatal(err)
		}

		list, total, err := s.UserMedia(ctx, "@alice:test", 0, 2, MediaOrder{By: "created_ts", Backwards: true})
		if err != nil || total != 3 || len(list) != 2 || list[0].MediaID != id(a3) || list[0].UploadName != nil || list[1].MediaID != id(a2) {
			t.Fatalf("newest first: %+v %d %v", list, total, err)
		}
		list, _, _ = s.UserMedia(ctx, "@alice:test", 0, 10, MediaOrder{By: "media_length"})
		if list[2].MediaID != id(a3) || list[2].MediaType != "application/pdf" {
			t.Fatalf("by length: %+v", list)
		}
		if _, _, err := s.UserMedia(ctx, "@alice:test", 0, 10, MediaOrder{By: "size; --"}); !merr.Is(err, "M_INVALID_PARAM") {
			t.Fatalf("unknown order: %v", err)
		}

		// Quarantine: not served, listed as quarantined, then served again.
		if err := s.SetQuarantined(ctx, id(a1), "@admin:test"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Download(ctx, testServer, id(a1), "", 0); !merr.Is(err, "M_NOT_FOUND") {
			t.Fatalf("quarantined download: %v", err)
		}
		if _, err := s.Thumbnail(ctx, testServer, id(a1), ThumbnailRequest{Width: 32, Height: 32, Method: Scale}, 0); !merr.Is(err, "M_NOT_FOUND") {
			t.Fatalf("quarantined thumbnail: %v", err)
		}
		c, err := s.Download(ctx, testServer, id(a2), "", 0) // same content, not quarantined
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if err := s.SetQuarantined(ctx, "nope", "@admin:test"); !merr.Is(err, "M_NOT_FOUND") {
			t.Fatalf("unknown media: %v", err)
		}
		if err := s.SetQuarantined(ctx, id(a1), ""); err != nil {
			t.Fatal(err)
		}
		c, err = s.Download(ctx, testServer, id(a1), "", 0)
		if err != nil {
			t.Fatalf("after the quarantine is lifted: %v", err)
		}
		c.Close()
		if n, err := s.QuarantineMany(ctx, []string{id(a1), id(a3), "unknown", "bad id!"}, "@admin:test"); err != nil || n != 2 {
			t.Fatalf("quarantine many: %d %v", n, err)
		}
		if n, _ := s.QuarantineUser(ctx, "@alice:test", "@admin:test"); n != 2 { // a2 and the pending ID
			t.Fatalf("quarantine the rest of the user's: %d", n)
		}

		// Deletion: the shared file stays until its last media ID goes.
		m1, _ := selectMedia(ctx, db, id(a1))
		path := s.files.path(m1.SHA256)
		if err := s.DeleteMedia(ctx, id(a1)); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("a file still in use went: %v", err)
		}
		if err := s.DeleteMedia(ctx, id(a2)); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("an unused file stayed: %v", err)
		}
		if err := s.DeleteMedia(ctx, id(a2)); !merr.Is(err, "M_NOT_FOUND") {
			t.Fatalf("deleted twice: %v", err)
		}
		if _, total, _ := s.UserMedia(ctx, "@alice:test", 0, 10, MediaOrder{}); total != 1 {
			t.Fatalf("left: %d", total)
		}
	})
}
