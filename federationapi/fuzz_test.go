package federationapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// FuzzSend feeds /send bodies to the handler (a real roomserver on
// SQLite behind it): whatever the body, the answer is never a 5xx and the
// handler never panics.
func FuzzSend(f *testing.F) {
	e := newEnv(f, storagetest.Open(f, storage.SQLite))
	roomID := e.publicRoom("10")
	oldRoom := e.publicRoom("1")
	e.joinRemote(roomID, rita)
	e.joinRemote(oldRoom, rita)
	good := e.build(roomID, rita, "m.room.message", nil, message("seed"), remoteName, e.remote)
	old := e.build(oldRoom, rita, "m.room.message", nil, message("seed v1"), remoteName, e.remote)
	seed := func(v any) {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(txn([]json.RawMessage{good.JSON(), old.JSON()}))
	seed(txn([]json.RawMessage{good.JSON()}, map[string]any{"edu_type": "m.typing",
		"content": map[string]any{"room_id": roomID, "user_id": rita, "typing": true}}))
	seed(txn(nil, map[string]any{"edu_type": "m.receipt", "content": map[string]any{roomID: map[string]any{
		"m.read": map[string]any{rita: map[string]any{"event_ids": []string{good.EventID()}}}}}}))
	for _, s := range []string{
		``,
		`{}`,
		`null`,
		`[]`,
		`{"pdus":null,"edus":null}`,
		`{"pdus":[null,1,"x",[],{}],"edus":[null,1,{"edu_type":5}]}`,
		`{"pdus":[{"room_id":1e999}]}`,
		`{"pdus":[{"room_id":"` + roomID + `","depth":1e400,"origin_server_ts":-99999999999999999999}]}`,
		`{"pdus":[{"room_id":"` + roomID + `","depth":9223372036854775808,"prev_events":[[[[[]]]]],"auth_events":{"a":{"b":{}}}}]}`,
		`{"pdus":[{"room_id":"` + oldRoom + `","event_id":"$x:remote.test","sender":"@rita:remote.test","type":"m.room.member","state_key":"@rita:remote.test","content":{"membership":{"x":[1,2,{"y":null}]}},"prev_events":[["$a",{"sha256":"x"}]],"auth_events":[],"depth":2,"origin_server_ts":1,"hashes":{"sha256":"AAAA"},"signatures":{"remote.test":{"ed25519:x":"AAAA"}}}]}`,
		`{"pdus":[{"room_id":"!\u0000:local.test","event_id":"$\u0000"}]}`,
		`{"edus":[{"edu_type":"m.receipt","content":{"` + roomID + `":{"m.read":{"@rita:remote.test":{"event_ids":[]}}}}}]}`,
		`{"edus":[{"edu_type":"m.receipt","content":{"!\u0000":{"m.read":{"@rita:remote.test":{"event_ids":["$\u0000"]}}}}}]}`,
		`{"edus":[{"edu_type":"m.typing","content":{"room_id":"!\u0000\uffff","user_id":"@rita:remote.test","typing":true}}]}`,
		`{"pdus":[` + strings.Repeat(`{"a":`, 300) + strings.Repeat(`}`, 300) + `]}`,
		"{\"pdus\":[\"\xff\xfe\"]}",
	} {
		f.Add([]byte(s))
	}
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, body []byte) {
		txnID := fmt.Sprintf("fuzz%d", n.Add(1))
		req := httptest.NewRequestWithContext(e.ctx, http.MethodPut, sendPath(txnID), strings.NewReader(string(body)))
		req.Header.Set(originHeader, remoteName)
		w := httptest.NewRecorder()
		e.plain.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("status %d %s for %q", w.Code, w.Body.Bytes(), body)
		}
		if w.Code == http.StatusOK {
			var ans struct {
				PDUs map[string]pduResult `json:"pdus"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil || ans.PDUs == nil {
				t.Fatalf("answer %s: %v", w.Body.Bytes(), err)
			}
		}
	})
}
