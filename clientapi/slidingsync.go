package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/syncapi"
)

// Simplified sliding sync (MSC4186), the sync Element X uses: the
// handler parses the request; the sync engine (syncapi/sliding.go)
// answers it, waiting as /sync does (parked when many wait).

// slidingService is the sync engine's sliding sync.
type slidingService interface {
	StartSliding(ctx context.Context, req syncapi.SlidingRequest) (*syncapi.SlidingResponse, *syncapi.SlidingWaiter, error)
}

// slidingBodyLimit bounds a sliding sync request body.
const slidingBodyLimit = 256 << 10

func (a *API) slidingRoutes() []Route {
	return []Route{
		{Method: "POST", Path: "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", H: a.slidingSync, Auth: authUser},
	}
}

func (a *API) slidingSync(w http.ResponseWriter, r *http.Request) error {
	svc, ok := a.Sync.(slidingService)
	if !ok {
		return merr.Unrecognized("Unrecognized request")
	}
	q := r.URL.Query()
	timeout, err := intValue(q, "timeout", 0)
	if err != nil {
		return err
	}
	var body syncapi.SlidingBody
	if err := httpx.DecodeJSON(r, &body, slidingBodyLimit); err != nil {
		return err
	}
	d := DeviceFrom(r)
	resp, waiter, err := svc.StartSliding(r.Context(), syncapi.SlidingRequest{
		UserID: d.UserID, DeviceID: d.DeviceID, Pos: q.Get("pos"), Timeout: time.Duration(timeout) * time.Millisecond,
		SetPresence: q.Get("set_presence"), Body: body,
	})
	if err != nil {
		return err
	}
	if waiter == nil {
		return httpx.JSON(w, http.StatusOK, resp)
	}
	ri := httpx.Info(r.Context())
	var parked *httpx.Parked
	if a.Sync.Waiting() > a.ParkAbove {
		parked, _ = a.Handoff.Park(w, r, waiter.Cancel)
	}
	if parked == nil {
		httpx.ReleaseSlot(r.Context())
		resp, err := waiter.Wait(r.Context())
		if err != nil {
			return err
		}
		return httpx.JSON(w, http.StatusOK, resp)
	}
	if ri != nil {
		ri.Parked = true
	}
	ctx := context.WithoutCancel(r.Context())
	waiter.Park(ctx, func(resp *syncapi.SlidingResponse, err error) {
		status, body := parkedReply(ctx, err, func() ([]byte, error) { return json.Marshal(resp) })
		_ = parked.Answer(status, body)
		ri.Finish(status)
	})
	return nil
}
