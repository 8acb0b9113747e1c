package synctoken

import (
	"strconv"
	"strings"

	"github.com/haven-chat/haven/internal/merr"
)

// Pos is one position per stream. A sync token is its text form; clients
// treat it as opaque.
type Pos struct {
	Events      int64
	Receipts    int64
	AccountData int64
	Typing      int64
	ToDevice    int64
	DeviceLists int64
	Presence    int64
	// Peeks is the stream of peeks started and ended (MSC2753); tokens
	// from before it existed have 0.
	Peeks int64
}

// String is the sync token: "s" and the positions joined by "_".
func (p Pos) String() string {
	var b strings.Builder
	b.Grow(64)
	b.WriteByte('s')
	for i, f := range []int64{p.Events, p.Receipts, p.AccountData, p.Typing, p.ToDevice, p.DeviceLists, p.Presence, p.Peeks} {
		if i > 0 {
			b.WriteByte('_')
		}
		b.WriteString(strconv.FormatInt(f, 10))
	}
	return b.String()
}

// Parse reads a sync token.
func Parse(s string) (Pos, error) {
	var p Pos
	if len(s) < 2 || s[0] != 's' || len(s) > 200 {
		return p, merr.InvalidParam("Invalid sync token")
	}
	parts := strings.Split(s[1:], "_")
	vals := []*int64{&p.Events, &p.Receipts, &p.AccountData, &p.Typing, &p.ToDevice, &p.DeviceLists, &p.Presence, &p.Peeks}
	if len(parts) > len(vals) {
		return p, merr.InvalidParam("Invalid sync token")
	}
	for i, part := range parts {
		n, err := strconv.ParseInt(part, 10, 64)
		if err != nil || n < 0 {
			return p, merr.InvalidParam("Invalid sync token")
		}
		*vals[i] = n
	}
	return p, nil
}

// After tells whether any stream of p is ahead of o.
func (p Pos) After(o Pos) bool {
	return p.Events > o.Events || p.Receipts > o.Receipts || p.AccountData > o.AccountData || p.Typing > o.Typing ||
		p.ToDevice > o.ToDevice || p.DeviceLists > o.DeviceLists || p.Presence > o.Presence || p.Peeks > o.Peeks
}

// Max is the stream-wise maximum.
func (p Pos) Max(o Pos) Pos {
	return Pos{max(p.Events, o.Events), max(p.Receipts, o.Receipts), max(p.AccountData, o.AccountData), max(p.Typing, o.Typing),
		max(p.ToDevice, o.ToDevice), max(p.DeviceLists, o.DeviceLists), max(p.Presence, o.Presence), max(p.Peeks, o.Peeks)}
}

// Min is the stream-wise minimum.
func (p Pos) Min(o Pos) Pos {
	return Pos{min(p.Events, o.Events), min(p.Receipts, o.Receipts), min(p.AccountData, o.AccountData), min(p.Typing, o.Typing),
		min(p.ToDevice, o.ToDevice), min(p.DeviceLists, o.DeviceLists), min(p.Presence, o.Presence), min(p.Peeks, o.Peeks)}
}
