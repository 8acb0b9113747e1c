package clientapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"
)

// TestGuestRoutesExist: every route the guest list opens is a route of the
// API (a typo would silently close it to guests).
func TestGuestRoutesExist(t *testing.T) {
	a := &API{}
	areas := append(append(append(a.BaseAreas(), a.UserAreas()...), a.RoomAreas()...), a.KeysArea(nil), a.PushArea(nil, nil))
	known := map[string]bool{}
	for _, area := range areas {
		for _, rt := range area() {
			known[rt.Method+" "+rt.Path] = true
		}
	}
	for key := range guestRoutes {
		if !known[key] {
			t.Errorf("the guest list names %q, which is not a route", key)
		}
	}
	// A guest sends messages, and only messages.
	send := Route{Method: "PUT", Path: v3 + "/rooms/{roomId}/send/{eventType}/{txnId}"}
	for typ, want := range map[string]bool{"m.room.message": true, "m.room.encrypted": false, "m.reaction": false} {
		r := httptest.NewRequest("PUT", "/x", nil)
		r = withPathParams(r, map[string]string{"eventType": typ})
		if got := guestAllowed(send, r); got != want {
			t.Errorf("a guest sending %s: allowed %v, want %v", typ, got, want)
		}
	}
}

// withPathParams gives a request the router's URL parameters.
func withPathParams(r *http.Request, params map[string]string) *http.Request {
	rc := chi.NewRouteContext()
	for k, v := range params {
		rc.URLParams.Add(k, v)
	}
	return r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, rc))
}
