package loadtest

// The claim scenario: every load user's device uploads its device keys and
// --otks signed_curve25519 one-time keys; one more account (PREFIX-claimer)
// then claims one key of every device in a single /keys/claim, again and
// again on --workers workers. A round is exactly --otks claims, so every
// claim must find a key for every device; then every device uploads
// --otks new keys (timed apart, and their server CPU left out of the
// per-claim figure). Every claimed key is checked: it must be one the
// device uploaded, and no key may be handed out twice.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ltOTKAlg is the algorithm of the uploaded one-time keys.
const ltOTKAlg = "signed_curve25519"

type ltClaimReport struct {
	Devices        int        `json:"devices"`
	OTKsPerRound   int        `json:"otks_per_device_per_round"`
	Workers        int        `json:"workers"`
	WindowSeconds  float64    `json:"window_seconds"`
	Rounds         int        `json:"rounds"`
	InitialUploads ltOpReport `json:"initial_uploads"`
	Claims         ltOpReport `json:"claims"`
	RefillUploads  ltOpReport `json:"refill_uploads"`
	RefillSeconds  float64    `json:"refill_seconds"`
	KeysClaimed    int        `json:"keys_claimed"`
	DistinctKeys   int        `json:"distinct_keys"`
	Duplicates     int        `json:"duplicate_keys"`
	WrongKeys      int        `json:"wrong_keys"`
	MissingKeys    int        `json:"missing_keys"`
	// The server's CPU in the window without the refill uploads, per claim.
	ServerCPUMsPerClaim *float64 `json:"server_cpu_ms_per_claim,omitempty"`
	RefillCPUSeconds    *float64 `json:"server_cpu_seconds_in_refills,omitempty"`
}

// otkID is the key ID of one-time key i of a round: unique per device and run.
func otkID(runID string, round, i int) string {
	return fmt.Sprintf("%s:lt%sr%dk%d", ltOTKAlg, runID, round, i)
}

// otkValue is the public key of a device's key keyID: a 43-character
// stand-in for an unpadded base64 curve25519 key, unique per device and ID.
func otkValue(deviceIndex int, keyID string) string {
	_, id, _ := strings.Cut(keyID, ":")
	v := fmt.Sprintf("%06d%s", deviceIndex, id)
	for len(v) < 43 {
		v += "A"
	}
	return v
}

// fakeSignature is a syntactically valid ed25519 signature (86 characters of
// unpadded base64); the server stores signatures without checking them.
var fakeSignature = func() string {
	b := make([]byte, 86)
	for i := range b {
		b[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i%64]
	}
	return string(b)
}()

// keysUploadBody is a /keys/upload body: the device keys (when withDevice)
// and the round's one-time keys.
func keysUploadBody(u *ltUser, runID string, round, n int, withDevice bool) map[string]any {
	sig := map[string]any{u.UserID: map[string]string{"ed25519:" + u.DeviceID: fakeSignature}}
	body := map[string]any{}
	if withDevice {
		body["device_keys"] = map[string]any{
			"user_id": u.UserID, "device_id": u.DeviceID,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
			"keys": map[string]string{
				"curve25519:" + u.DeviceID: otkValue(u.Index, "x:curve"+runID),
				"ed25519:" + u.DeviceID:    otkValue(u.Index, "x:ed"+runID),
			},
			"signatures": sig,
		}
	}
	otks := make(map[string]any, n)
	for i := 0; i < n; i++ {
		id := otkID(runID, round, i)
		otks[id] = map[string]any{"key": otkValue(u.Index, id), "signatures": sig}
	}
	body["one_time_keys"] = otks
	return body
}

// ltClaimCheck checks claimed keys. Safe for concurrent use.
type ltClaimCheck struct {
	byUser map[string]*ltUser

	mu                                  sync.Mutex
	seenIDs, seenValues                 map[string]bool
	claimed, duplicates, wrong, missing int
}

func newClaimCheck(users []*ltUser) *ltClaimCheck {
	c := &ltClaimCheck{byUser: make(map[string]*ltUser, len(users)), seenIDs: map[string]bool{}, seenValues: map[string]bool{}}
	for _, u := range users {
		c.byUser[u.UserID] = u
	}
	return c
}

// ltClaimAnswer is the part of a /keys/claim answer the check reads.
type ltClaimAnswer struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
}

// check counts the keys of one claim's answer for the given devices.
func (c *ltClaimCheck) check(users []*ltUser, ans *ltClaimAnswer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range users {
		keys := ans.OneTimeKeys[u.UserID][u.DeviceID]
		if len(keys) == 0 {
			c.missing++
			continue
		}
		for id, raw := range keys {
			c.claimed++
			var k struct {
				Key string `json:"key"`
			}
			if json.Unmarshal(raw, &k) != nil || k.Key != otkValue(u.Index, id) {
				c.wrong++
			}
			devID := u.UserID + "|" + u.DeviceID + "|" + id
			if c.seenIDs[devID] || c.seenValues[k.Key] {
				c.duplicates++
				continue
			}
			c.seenIDs[devID], c.seenValues[k.Key] = true, true
		}
	}
}

func (c *ltClaimCheck) fill(r *ltClaimReport) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r.KeysClaimed, r.DistinctKeys, r.Duplicates, r.WrongKeys, r.MissingKeys = c.claimed, len(c.seenIDs), c.duplicates, c.wrong, c.missing
}

func claimBody(users []*ltUser) map[string]any {
	want := make(map[string]map[string]string, len(users))
	for _, u := range users {
		want[u.UserID] = map[string]string{u.DeviceID: ltOTKAlg}
	}
	return map[string]any{"one_time_keys": want, "timeout": 10000}
}

// ltClaimer runs the rounds of claims and refills.
type ltClaimer struct {
	e       *ltEnv
	users   []*ltUser
	claimer *ltUser
	body    map[string]any
	check   *ltClaimCheck

	round                 int
	left                  atomic.Int64 // claims left in this round
	claims                *ltSendStats // of the current phase
	refill                *ltSendStats
	refillCPU, refillSecs float64
	haveCPU               bool
}

// upload has every device upload the keys of a round.
func (cl *ltClaimer) upload(ctx context.Context, st *ltSendStats, round int, withDevice bool) error {
	return forEach(ctx, len(cl.users), cl.e.opts.Concurrency, func(ctx context.Context, i int) error {
		u := cl.users[i]
		body := keysUploadBody(u, cl.e.runID, round, cl.e.opts.OTKs, withDevice)
		start := time.Now()
		err := withRetry(ctx, func(ctx context.Context) error {
			_, err := cl.e.c.do(ctx, "keys/upload", "POST", "/_matrix/client/v3/keys/upload", u.AccessToken, body, nil)
			return err
		})
		st.record(time.Since(start), err)
		if err != nil {
			return fmt.Errorf("keys/upload of %s: %w", u.UserID, err)
		}
		return nil
	})
}

// phase claims for d; measured phases time the refills' server CPU.
func (cl *ltClaimer) phase(ctx context.Context, d time.Duration, measured bool) error {
	end := time.Now().Add(d)
	for ctx.Err() == nil && time.Now().Before(end) {
		if cl.left.Load() <= 0 {
			cl.round++
			cpu0, ok0 := 0.0, false
			if measured {
				cpu0, ok0 = cl.e.serverCPU(ctx)
			}
			start := time.Now()
			if err := cl.upload(ctx, cl.refill, cl.round, false); err != nil {
				return err
			}
			if measured {
				cl.refillSecs += time.Since(start).Seconds()
				if cpu1, ok1 := cl.e.serverCPU(ctx); ok0 && ok1 {
					cl.refillCPU += cpu1 - cpu0
					cl.haveCPU = true
				}
			}
			cl.left.Store(int64(cl.e.opts.OTKs))
		}
		closedLoop(ctx, cl.e.opts.Workers, time.Until(end), func(ctx context.Context, _ int, _ int64) bool {
			if cl.left.Add(-1) < 0 {
				return false
			}
			var ans ltClaimAnswer
			start := time.Now()
			_, err := cl.e.c.do(ctx, "keys/claim", "POST", "/_matrix/client/v3/keys/claim", cl.claimer.AccessToken, cl.body, &ans)
			cl.claims.record(time.Since(start), err)
			if err == nil {
				cl.check.check(cl.users, &ans)
			}
			return true
		})
		if cl.left.Load() < 0 {
			cl.left.Store(0)
		}
	}
	return ctx.Err()
}

func (e *ltEnv) claimScenario(ctx context.Context, users []*ltUser, rep *Report) error {
	claimer, err := e.setup.newUser(ctx, len(users), e.opts.Prefix+"-claimer", loadFilter(e.opts.TimelineLimit))
	if err != nil {
		e.noteErrors(rep, err)
		return fmt.Errorf("claimer account: %w", err)
	}
	cl := &ltClaimer{e: e, users: users, claimer: claimer, body: claimBody(users), check: newClaimCheck(users),
		claims: newOpStats(), refill: newOpStats()}
	cr := &ltClaimReport{Devices: len(users), OTKsPerRound: e.opts.OTKs, Workers: e.opts.Workers}
	rep.Claim = cr
	e.logf("%d devices upload their device keys and %d one-time keys each", len(users), e.opts.OTKs)
	initial := newOpStats()
	start := time.Now()
	err = cl.upload(ctx, initial, 0, true)
	cr.InitialUploads = opReport(initial, time.Since(start).Seconds())
	if err != nil {
		e.noteErrors(rep, err)
		return err
	}
	cl.left.Store(int64(e.opts.OTKs))
	if e.opts.Warmup > 0 {
		e.logf("warm-up %s", e.opts.Warmup)
		if err := cl.phase(ctx, e.opts.Warmup, false); err != nil {
			return err
		}
	}
	cl.claims, cl.refill = newOpStats(), newOpStats()
	rounds0 := cl.round
	e.logf("claiming %d devices at once on %d worker(s) for %s", len(users), e.opts.Workers, e.opts.Duration)
	var phaseErr error
	cr.WindowSeconds = e.measured(ctx, rep, func(ctx context.Context) ltWork {
		phaseErr = cl.phase(ctx, e.opts.Duration, true)
		return ltWork{}
	})
	claimSecs := cr.WindowSeconds - cl.refillSecs
	cr.Rounds = cl.round - rounds0
	cr.Claims = opReport(cl.claims, claimSecs)
	cr.RefillUploads = opReport(cl.refill, cl.refillSecs)
	cr.RefillSeconds = cl.refillSecs
	cl.check.fill(cr)
	if sv := rep.Server; sv != nil && sv.CPUSeconds != nil && cl.haveCPU {
		cr.RefillCPUSeconds = fp(cl.refillCPU)
		if cr.Claims.OK > 0 {
			cr.ServerCPUMsPerClaim = fp(1000 * (*sv.CPUSeconds - cl.refillCPU) / float64(cr.Claims.OK))
		}
	}
	if cr.Duplicates+cr.WrongKeys+cr.MissingKeys > 0 {
		rep.note("claimed keys: %d handed out twice, %d not the device's; %d times a device got no key although every claim of a round should find one", cr.Duplicates, cr.WrongKeys, cr.MissingKeys)
	}
	if cr.Claims.Failed > 0 {
		rep.note("%d claims failed: %s", cr.Claims.Failed, fmtCounts(cr.Claims.Errors))
	}
	return phaseErr
}

func writeClaim(p func(string, ...any), c *ltClaimReport) {
	p("Claims: /keys/claim of %d devices at once, %d worker(s), measured window %.1f s (%.2f s of it refilling, %d rounds of %d claims)",
		c.Devices, c.Workers, c.WindowSeconds, c.RefillSeconds, c.Rounds, c.OTKsPerRound)
	p("  claims           %s", fmtOp(c.Claims))
	p("  keys claimed in the whole run (warm-up included) %d, distinct %d; HANDED OUT TWICE %d, not the device's %d, devices left without a key %d",
		c.KeysClaimed, c.DistinctKeys, c.Duplicates, c.WrongKeys, c.MissingKeys)
	if c.ServerCPUMsPerClaim != nil {
		p("  server CPU %.3f ms per claim (refills left out: %.2f CPU-s)", *c.ServerCPUMsPerClaim, deref(c.RefillCPUSeconds))
	}
	p("  first uploads    %s", fmtOp(c.InitialUploads))
	p("  refill uploads   %s", fmtOp(c.RefillUploads))
}
