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
	p = n.userPosLocked(user, device)
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
		if n.roomEvents[r] <= since.Events && m.Pos <= since.Events && n.roomReceipts[r] <= since.Receipts && n.roomTyping[r] <= since.Typing {
			continue
		}
		if fn(n.roomViewLocked(r, m)) {
			return p, true
		}
	}
	return p, false
}
