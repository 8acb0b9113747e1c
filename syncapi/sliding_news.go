package syncapi

import "github.com/haven-chat/haven/syncapi/notifier"

// slidingNews tells, from the notifier alone (no query), whether anything
// after since may concern a sliding sync connection that has snap: what
// its long-poll samples before it builds. A wake-up of the user that
// concerns none of the connection's rooms nor its extensions builds
// nothing. It errs on the side of yes: a build that finds nothing just
// waits again, a missed wake-up would leave the client behind.
//
// A room event is news when the room is one the client has (snap.sent)
// or subscribes to; when it is of a bump type (it may move the room into
// a list's ranges); when it is a membership of the user's own (list
// counts, invites, leaves). Extensions: to-device messages for the
// device, device list changes (e2ee: also a join or leave in any of the
// user's rooms), account data, and typing in the rooms the client has,
// each only when asked for; receipts in the rooms the client has always
// (the user's own moves the room's unread counts). Filters that an event outside
// the window may change (is_encrypted, spaces) make every room event
// news; those that account data changes (is_dm, tags) make it news.
func (s *Service) slidingNews(req SlidingRequest, snap *slidingSnap, since Pos) bool {
	b := &req.Body
	ext := b.Extensions
	anyRoom := false
	accountData := ext.AccountData != nil && enabled(ext.AccountData.Enabled)
	for _, l := range b.Lists {
		if f := l.Filters; f != nil {
			anyRoom = anyRoom || f.IsEncrypted != nil || f.Spaces != nil
			accountData = accountData || f.IsDM != nil || f.needTags()
		}
	}
	keys := s.opts.Keys != nil
	toDevice := keys && ext.ToDevice != nil && enabled(ext.ToDevice.Enabled)
	e2ee := keys && ext.E2EE != nil && enabled(ext.E2EE.Enabled)
	typing := ext.Typing != nil && enabled(ext.Typing.Enabled)

	// moved: rooms with events after since that are news for the e2ee
	// extension only if one of them is a membership event.
	var moved []string
	p, hit := s.n.Moved(req.UserID, req.DeviceID, since, func(rv notifier.RoomView) bool {
		if rv.Mem.Pos > since.Events {
			return true
		}
		_, has := snap.sent[rv.ID]
		if !has {
			_, has = b.RoomSubscriptions[rv.ID]
		}
		if rv.Events > since.Events {
			if has || anyRoom || rv.Mem.State == "join" && rv.Bump > since.Events {
				return true
			}
			if e2ee {
				moved = append(moved, rv.ID)
			}
		}
		// A receipt may be the user's own, which moves the room's unread
		// counts: news with or without the receipts extension.
		return has && (rv.Receipts > since.Receipts || typing && rv.Typing > since.Typing)
	})
	switch {
	case hit,
		toDevice && p.ToDevice > since.ToDevice,
		e2ee && p.DeviceLists > since.DeviceLists,
		accountData && p.AccountData > since.AccountData:
		return true
	}
	return e2ee && len(moved) > 0 && s.deviceLists.MembershipAfter(moved, since.Events)
}
