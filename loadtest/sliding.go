package loadtest

// --sync sliding: each user holds a sliding sync (MSC4186) long-poll
// instead of /sync, as Element X does: one list of the user's rooms by
// recency, the first 20 of them, with the state a room list shows and
// the to-device and e2ee extensions. The timeline_limit is
// --timeline-limit, as /sync's (Element X's room list asks for 1: then a
// message followed by another of its room before the next answer is
// left out, limited, and counts as lost). The messages are tracked from
// the rooms' timelines as /sync's are.

import (
	"context"
	"net/url"
	"strconv"
	"time"
)

const ltSlidingPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// ltSlidingRequired is the required_state of an Element X-like room list.
var ltSlidingRequired = [][]string{
	{"m.room.name", ""}, {"m.room.topic", ""}, {"m.room.avatar", ""}, {"m.room.canonical_alias", ""},
	{"m.room.power_levels", ""}, {"m.room.join_rules", ""}, {"m.room.encryption", ""}, {"m.room.create", ""},
	{"m.room.history_visibility", ""}, {"m.room.pinned_events", ""}, {"m.room.tombstone", ""},
	{"m.room.member", "$ME"}, {"m.call.member", "*"},
}

type ltSlidingBody struct {
	ConnID     string                   `json:"conn_id"`
	Lists      map[string]ltSlidingList `json:"lists"`
	Extensions map[string]any           `json:"extensions"`
}

type ltSlidingList struct {
	Ranges        [][]int    `json:"ranges"`
	TimelineLimit int        `json:"timeline_limit"`
	RequiredState [][]string `json:"required_state"`
}

// slidingBody is a load user's request; toDeviceSince is the to-device
// extension's next_batch of the previous answer ("" at first).
func slidingBody(timelineLimit int, toDeviceSince string) *ltSlidingBody {
	td := map[string]any{"enabled": true}
	if toDeviceSince != "" {
		td["since"] = toDeviceSince
	}
	return &ltSlidingBody{
		ConnID: "lt",
		Lists: map[string]ltSlidingList{"all": {
			Ranges: [][]int{{0, 19}}, TimelineLimit: timelineLimit, RequiredState: ltSlidingRequired,
		}},
		Extensions: map[string]any{"to_device": td, "e2ee": map[string]any{"enabled": true}},
	}
}

// ltSlidingResponse is the part of a sliding sync answer the load test reads.
type ltSlidingResponse struct {
	Pos   string `json:"pos"`
	Rooms map[string]struct {
		Timeline []ltEvent `json:"timeline"`
		Limited  bool      `json:"limited"`
	} `json:"rooms"`
	Extensions struct {
		ToDevice *struct {
			NextBatch string `json:"next_batch"`
		} `json:"to_device"`
	} `json:"extensions"`
}

// slidingPath is the path and query of a sliding sync; pos "" starts the
// connection; timeout is the long-poll's timeout (0 answers at once).
func slidingPath(pos string, timeout time.Duration) string {
	q := url.Values{}
	if pos != "" {
		q.Set("pos", pos)
	}
	q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	return ltSlidingPath + "?" + q.Encode()
}

// slidingSync runs one sliding sync request.
func (c *mxClient) slidingSync(ctx context.Context, token, pos string, body *ltSlidingBody, timeout time.Duration) (*ltSlidingResponse, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout+60*time.Second)
	defer cancel()
	var out ltSlidingResponse
	n, err := c.do(ctx, "sliding sync", "POST", slidingPath(pos, timeout), token, body, &out)
	if err != nil {
		return nil, n, err
	}
	return &out, n, nil
}

// slidingOnce runs user i's next sliding sync from its connection's
// position (a new connection when the server forgot it) and keeps the
// positions for the next.
func (s *ltSyncers) slidingOnce(ctx context.Context, i int, timeout time.Duration) (*ltSlidingResponse, error) {
	u := s.users[i]
	resp, _, err := u.on(s.c).slidingSync(ctx, u.AccessToken, s.since[i], slidingBody(s.timelineLimit, s.toDeviceSince[i]), timeout)
	if err != nil {
		if hasErrCode(err, "M_UNKNOWN_POS") {
			s.since[i] = ""
		}
		return nil, err
	}
	s.since[i] = resp.Pos
	if td := resp.Extensions.ToDevice; td != nil && td.NextBatch != "" {
		s.toDeviceSince[i] = td.NextBatch
	}
	return resp, nil
}

// handleSliding hands the run's events in resp to the tracker and tells
// whether resp had any timeline event.
func (s *ltSyncers) handleSliding(user int, resp *ltSlidingResponse, at time.Time) bool {
	hadEvents := false
	for roomID, r := range resp.Rooms {
		if s.timeline(user, roomID, r.Timeline, r.Limited, at) {
			hadEvents = true
		}
	}
	return hadEvents
}
