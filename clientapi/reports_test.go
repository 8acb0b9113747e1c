package clientapi

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/haven-chat/haven/adminapi/reports"
	"github.com/haven-chat/haven/internal/merr"
)

type fakeReports struct {
	mu   sync.Mutex
	got  []string
	fail error
}

func (f *fakeReports) Add(_ context.Context, reporter, roomID, eventID, reason string, score *int64) (int64, error) {
	if err := reports.Check(reason, score); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, reporter+" "+roomID+" "+eventID+" "+reason)
	return int64(len(f.got)), nil
}

// fakeViewer: alice sees $seen in !r:test; everything else is hidden or unknown.
type fakeViewer struct{}

func (f *fakeReports) List(_ context.Context, roomID string, from, limit int) ([]reports.Report, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []reports.Report
	for i, g := range f.got {
		if i >= from && len(out) < limit {
			out = append(out, reports.Report{ID: int64(i + 1), Reason: g})
		}
	}
	return out, int64(len(f.got)), nil
}

func (fakeViewer) Event(_ context.Context, userID, _, roomID, eventID string) (json.RawMessage, error) {
	if roomID == "!r:test" && eventID == "$seen" && userID == "@alice:test" {
		return json.RawMessage(`{}`), nil
	}
	if roomID == "!r:test" {
		return nil, merr.NotFound("Event not found")
	}
	return nil, merr.Forbidden("You are not in this room")
}

type fakeRoomChecker struct{}

func (fakeRoomChecker) Membership(_ context.Context, roomID, _ string) (string, int64, error) {
	if roomID == "!r:test" {
		return "join", 1, nil
	}
	return "", 0, merr.NotFound("Unknown room %s", roomID)
}

func TestReportRoutes(t *testing.T) {
	store := &fakeReports{}
	e := areaServer(t, nil, func(a *API) []func() []Route {
		return []func() []Route{a.ReportsArea(store, fakeViewer{}, fakeRoomChecker{})}
	})
	const base = "/_matrix/client/v3/rooms/"
	for _, tc := range []struct {
		name, path, token, body string
		status                  int
		errcode                 string
	}{
		{"event", base + "%21r:test/report/$seen", "alice-token", `{"reason":"spam","score":-100}`, 200, ""},
		{"event without body", base + "%21r:test/report/$seen", "alice-token", "", 200, ""},
		{"event the reporter cannot see", base + "%21r:test/report/$seen", "bob-token", `{}`, 404, "M_NOT_FOUND"},
		{"unknown event", base + "%21r:test/report/$nope", "alice-token", `{}`, 404, "M_NOT_FOUND"},
		{"room the reporter is not in", base + "%21other:test/report/$x", "alice-token", `{}`, 404, "M_NOT_FOUND"},
		{"not an event ID", base + "%21r:test/report/seen", "alice-token", `{}`, 404, "M_NOT_FOUND"},
		{"score out of range", base + "%21r:test/report/$seen", "alice-token", `{"score":10}`, 400, "M_INVALID_PARAM"},
		{"score of the wrong type", base + "%21r:test/report/$seen", "alice-token", `{"score":"bad"}`, 400, "M_BAD_JSON"},
		{"not JSON", base + "%21r:test/report/$seen", "alice-token", `{`, 400, "M_NOT_JSON"},
		{"no token", base + "%21r:test/report/$seen", "", `{}`, 401, "M_MISSING_TOKEN"},
		{"room", base + "%21r:test/report", "bob-token", `{"reason":"bad room"}`, 200, ""},
		{"unknown room", base + "%21gone:test/report", "bob-token", `{"reason":"x"}`, 404, "M_NOT_FOUND"},
		{"bad room ID", base + "nope/report", "bob-token", `{}`, 404, "M_NOT_FOUND"},
		{"NUL in the room ID", base + "%21r%00:test/report", "bob-token", `{}`, 400, "M_INVALID_PARAM"},
		{"NUL in the event ID", base + "%21r:test/report/$a%00b", "alice-token", `{}`, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			e.t = t
			e.want(e.do("POST", tc.path, tc.token, body), tc.status, tc.errcode)
		})
	}
	e.t = t
	r := e.do("GET", "/_synapse/admin/v1/event_reports?limit=2", "admin-token", nil)
	e.want(r, 200, "")
	if list, _ := r.body["event_reports"].([]any); len(list) != 2 || r.body["total"] != float64(3) || r.body["next_token"] != float64(2) {
		t.Fatalf("admin list: %s", r.raw)
	}
	e.want(e.do("GET", "/_synapse/admin/v1/event_reports", "alice-token", nil), 403, "M_FORBIDDEN")
	e.want(e.do("GET", "/_synapse/admin/v1/event_reports?limit=0", "admin-token", nil), 400, "M_INVALID_PARAM")
	if len(store.got) != 3 || store.got[0] != "@alice:test !r:test $seen spam" || store.got[2] != "@bob:test !r:test  bad room" {
		t.Fatalf("stored %q", store.got)
	}
}
