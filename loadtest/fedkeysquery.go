package loadtest

// The keysquery scenario of loadtest-federation: --keys-users users of
// site B upload device keys and join a public room of site A; a user of A
// then asks /keys/query for all of them in one request, first once cold
// (A asks B), then --keys-rounds times one after another, warm (A answers
// from its copy of B's users' device lists, kept while a room is shared).
// Target: the warm p99 within 100 ms for 100 users.

import (
	"context"
	"fmt"
	"time"
)

// fedKeysQueryReport is what the keysquery scenario measured.
type fedKeysQueryReport struct {
	Users   int       `json:"users"`
	Cold    float64   `json:"cold_ms"`
	Warm    ltSummary `json:"warm"`
	Missing int       `json:"devices_missing"`
}

type keysQueryAnswer struct {
	DeviceKeys map[string]map[string]any `json:"device_keys"`
	Failures   map[string]any            `json:"failures"`
}

func (r *fedRun) keysQuery(ctx context.Context) error {
	o := r.o
	n := o.KeysUsers
	r.logf("keysquery: /keys/query on A for %d users of B", n)
	if err := r.startSites(ctx, "keysquery"); err != nil {
		return err
	}
	defer r.stopSites()
	names := make([]string, n)
	idx := make([]int, n)
	for i := range names {
		names[i], idx[i] = fmt.Sprintf("%s-k%d", o.Prefix, i), i
	}
	remote, err := r.newUsers(ctx, r.b, names, idx)
	if err != nil {
		return err
	}
	asker, err := r.newUsers(ctx, r.a, []string{o.Prefix + "-asker"}, []int{n})
	if err != nil {
		return err
	}
	a := asker[0]
	var roomID string
	err = withRetry(ctx, func(ctx context.Context) error {
		var err error
		roomID, err = r.a.c.createRoom(ctx, a.AccessToken, map[string]any{"preset": "public_chat", "name": "keys room"})
		return err
	})
	if err != nil {
		return err
	}
	err = forEach(ctx, n, o.Concurrency, func(ctx context.Context, i int) error {
		u := remote[i]
		if err := withRetry(ctx, func(ctx context.Context) error {
			_, err := u.client.do(ctx, "keys/upload", "POST", "/_matrix/client/v3/keys/upload", u.AccessToken, keysUploadBody(u, r.runID, 0, 0, true), nil)
			return err
		}); err != nil {
			return fmt.Errorf("keys/upload of %s: %w", u.UserID, err)
		}
		return withRetry(ctx, func(ctx context.Context) error { return u.client.joinVia(ctx, u.AccessToken, roomID, r.a.name) })
	})
	if err != nil {
		return err
	}
	want := make(map[string][]string, n)
	for _, u := range remote {
		want[u.UserID] = []string{}
	}
	body := map[string]any{"device_keys": want, "timeout": 10000}
	query := func() (time.Duration, int, error) {
		var ans keysQueryAnswer
		start := time.Now()
		_, err := r.a.c.do(ctx, "keys/query", "POST", "/_matrix/client/v3/keys/query", a.AccessToken, body, &ans)
		d := time.Since(start)
		if err != nil {
			return d, 0, err
		}
		if len(ans.Failures) > 0 {
			return d, 0, fmt.Errorf("keys/query failures: %v", ans.Failures)
		}
		missing := 0
		for _, u := range remote {
			if _, ok := ans.DeviceKeys[u.UserID][u.DeviceID]; !ok {
				missing++
			}
		}
		return d, missing, nil
	}
	rep := &fedKeysQueryReport{Users: n}
	r.rep.KeysQuery = rep
	cold, missing, err := query()
	if err != nil {
		return err
	}
	rep.Cold = float64(cold.Microseconds()) / 1000
	profDone := r.startProfiles(ctx, "keysquery", o.ProfileSeconds)
	lat := make([]time.Duration, 0, o.KeysRounds)
	for i := 0; i < o.KeysRounds && ctx.Err() == nil; i++ {
		d, m, err := query()
		if err != nil {
			return err
		}
		lat = append(lat, d)
		missing = max(missing, m)
	}
	profDone()
	rep.Warm, rep.Missing = summarize(lat), missing
	r.rep.target(fmt.Sprintf("/keys/query of %d users on B, warm p99", n), "<= 100 ms", fmt.Sprintf("%.1f ms (%d queries)", rep.Warm.P99, rep.Warm.Count),
		rep.Warm.P99 <= 100 && rep.Warm.Count > 0 && missing == 0)
	if n != 100 {
		r.rep.note("the query named %d users, not the target's 100", n)
	}
	return nil
}

func (t *fedKeysQueryReport) write(p func(string, ...any)) {
	p("/keys/query on A for %d users of B: cold %.1f ms", t.Users, t.Cold)
	p("  warm                      %s", fmtSummary(t.Warm))
	p("  devices missing from an answer: %d", t.Missing)
}
