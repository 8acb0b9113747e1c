package notifier

// Moved is what a long-poll that chooses its own rooms (sliding sync)
// samples instead of HasNews, with no query: the user's positions per
// stream as HasNews sees them (to-device: the device's), and fn called
// with each of the user's rooms in which anything moved after since (its
// events, the user's membership, its receipts or typing). fn returns true
// to stop there: news found. fn runs under the notifier's lock, so it
// must be quick and take no lock.
//
// hit is true when fn found news, or when since is before the notifier's
// start (it knows nothing of what happened before: anything may be news).
func (n *Notifier) Moved(user, device string, since Pos, fn func(RoomView) bool) (p Pos, hit bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p = n.floor
	if u := n.user[user]; u != nil {
		p = p.Max(*u)
	}
	p.ToDevice = max(n.floor.ToDevice, n.device[devKey{user, device}])
	if n.floor.After(since) {
		return p, true
	}
	// Every room event, receipt and typing change of one of the user's
	// rooms moves the user's position too (a membership of the user's
	// own as well): without such a move no room needs a look.
	if p.Events <= since.Events && p.Receipts <= since.Receipts && p.Typing <= since.Typing {
		return p, false
	}
	for r, m := range n.rooms[user] {
		ev, rc, ty := n.roomEvents[r], n.roomReceipts[r], n.roomTyping[r]
		if ev <= since.Events && m.Pos <= since.Events && rc <= since.Receipts && ty <= since.Typing {
			continue
		}
		if fn(RoomView{ID: r, Mem: m, Events: ev, Receipts: rc, Typing: ty, Bump: min(n.roomBump[r], ev)}) {
			return p, true
		}
	}
	return p, false
}
