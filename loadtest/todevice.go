package loadtest

// The todevice scenario: one more account (PREFIX-sender) joins the load
// rooms and, at --rate fan-outs per second, PUTs /sendToDevice with one
// message for the device of every load user in a single request, as a
// client sharing a Megolm session with a room does. Each user's /sync
// long-poll reports when its message arrives; the delivery tracker counts
// the targets of a fan-out as the members of one pseudo-room.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// ltToDeviceType is the event type of the load test's to-device messages.
const ltToDeviceType = "org.haven.loadtest"

// ltToDevicePad is the length of the stand-in ciphertext of each message:
// an Olm-encrypted m.room_key is about that long.
const ltToDevicePad = 1024

// ltFanout is the sender of the todevice scenario and its targets.
type ltFanout struct {
	sender  *ltUser
	targets []*ltUser
	tr      *ltTracker // one pseudo-room: member 0 is the sender, then the targets
	pad     string
}

// fanoutRoom is the pseudo-room of a fan-out to n devices: position 0 is
// the sender (user index n, which holds no long-poll), position i+1 is
// load user i.
func fanoutRoom(n int) *ltRoom {
	r := &ltRoom{Index: 0, ID: "fan-out", Members: make([]int, n+1), pos: make(map[int]int, n+1)}
	r.Members[0], r.pos[n] = n, 0
	for i := 0; i < n; i++ {
		r.Members[i+1], r.pos[i] = i, i+1
	}
	return r
}

func newFanout(sender *ltUser, targets []*ltUser) *ltFanout {
	return &ltFanout{sender: sender, targets: targets, tr: newTracker([]*ltRoom{fanoutRoom(len(targets))}),
		pad: strings.Repeat("A", ltToDevicePad)}
}

// body is the /sendToDevice body of fan-out seq: the same content for every
// target device, carrying the run ID and the sequence number.
func (f *ltFanout) body(runID string, seq int64, sentMS int64) json.RawMessage {
	content, _ := json.Marshal(map[string]any{
		"algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": f.pad,
		"lt_run": runID, "lt_seq": seq, "lt_sent_ms": sentMS,
	})
	var b bytes.Buffer
	b.Grow(len(f.targets) * (len(content) + 80))
	b.WriteString(`{"messages":{`)
	for i, u := range f.targets {
		if i > 0 {
			b.WriteByte(',')
		}
		user, _ := json.Marshal(u.UserID)
		dev, _ := json.Marshal(u.DeviceID)
		b.Write(user)
		b.WriteString(`:{`)
		b.Write(dev)
		b.WriteByte(':')
		b.Write(content)
		b.WriteByte('}')
	}
	b.WriteString(`}}`)
	return b.Bytes()
}

// toDeviceSetup makes the sender ready: an account that joins every load
// room, so that it shares a room with each target as an E2EE client does.
func (e *ltEnv) toDeviceSetup(ctx context.Context, users []*ltUser, rooms []*ltRoom) (*ltFanout, error) {
	sender, err := e.setup.newUser(ctx, len(users), e.opts.Prefix+"-sender", loadFilter(e.opts.TimelineLimit))
	if err != nil {
		return nil, fmt.Errorf("to-device sender: %w", err)
	}
	err = forEach(ctx, len(rooms), e.opts.Concurrency, func(ctx context.Context, r int) error {
		return e.setup.addMember(ctx, rooms[r].ID, users[rooms[r].Members[0]], sender)
	})
	if err != nil {
		return nil, fmt.Errorf("to-device sender joins the rooms: %w", err)
	}
	e.logf("to-device sender %s (device %s) fans out to %d devices", sender.UserID, sender.DeviceID, len(users))
	return newFanout(sender, users), nil
}

func (c *mxClient) sendToDevice(ctx context.Context, token, evType, txnID string, body any) error {
	path := "/_matrix/client/v3/sendToDevice/" + url.PathEscape(evType) + "/" + url.PathEscape(txnID)
	_, err := c.do(ctx, "sendToDevice", "PUT", path, token, body, nil)
	return err
}

// dispatchFanout starts one fan-out PUT without waiting for it.
func (s *ltSender) dispatchFanout(ctx context.Context, st *ltSendStats, seq int64, measured bool) {
	f := s.fanout
	s.inflight.Add(1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.inflight.Add(-1)
		body := f.body(s.runID, seq, time.Now().UnixMilli())
		start := s.tr.begin(seq, 0, f.sender.Index, measured)
		sctx, cancel := context.WithTimeout(ctx, s.sendTimeout)
		err := s.c.sendToDevice(sctx, f.sender.AccessToken, ltToDeviceType, fmt.Sprintf("lt-td-%s-%d", s.runID, seq), body)
		cancel()
		lat := time.Since(start)
		s.tr.sent(seq, err == nil)
		st.record(lat, err)
	}()
}

// writeToDevice prints the todevice scenario's figures.
func writeToDevice(p func(string, ...any), l *ltLoadReport) {
	p("To-device fan-out to %d devices: measured window %.1f s (sending %.1f s, then %.2f s until delivered or grace)",
		l.Targets, l.WindowSeconds, l.SendSeconds, l.SettleSeconds)
	p("  scheduled %d at %s fan-outs/s; sent OK %d (%.1f/s), failed %d, late %d, skipped (in-flight cap) %d",
		l.Scheduled, trimFloat(l.TargetRate), l.Sent, l.AchievedRate, l.SendFailed, l.Late, l.Skipped)
	p("  PUT latency              %s", fmtSummary(l.SendLatency))
	p("  delivery latency         %s", fmtSummary(l.DeliveryLatency))
	if l.AllDelivered != nil {
		p("  %-24s %s", fmt.Sprintf("until all %d had it", l.Targets), fmtSummary(*l.AllDelivered))
	}
	p("  schedule lag             %s", fmtSummary(l.ScheduleLag))
	p("  deliveries expected %d, seen %d; FAN-OUTS NOT DELIVERED TO ALL %d (missing deliveries %d)",
		l.DeliveriesWanted, l.DeliveriesSeen, l.LostMessages, l.MissingDeliveries)
	if l.Duplicates+l.AfterFailure+l.UnknownEvents > 0 {
		p("  duplicate deliveries %d, delivered despite a send error %d, unknown messages %d", l.Duplicates, l.AfterFailure, l.UnknownEvents)
	}
	if len(l.SendErrors) > 0 {
		p("  send errors: %s", fmtCounts(l.SendErrors))
	}
}
