package syncapi

import (
	"context"
	"encoding/json"

	"github.com/haven-chat/haven/roomserver"
)

// PushCounts is the push service as the sync engine sees it: it evaluates
// every committed event and applies every receipt before the members wake,
// and it answers the notification counts from memory.
type PushCounts interface {
	OnRoomEvent(ctx context.Context, n *roomserver.Notice)
	OnReceipt(ctx context.Context, roomID, userID, threadID string, eventPos, receiptPos int64)
	Unread(roomID, userID string) (notifications, highlights int)
	UnreadByThread(roomID, userID string, fn func(threadID string, notifications, highlights int))
}

// pushCounts fills a joined room's unread_notifications (and, when the
// filter asks for them, unread_thread_notifications) from the push service.
func (s *Service) pushCounts(jr *joinedRoom, roomID, userID string, byThread bool) {
	p := s.opts.Push
	if !byThread {
		n, h := p.Unread(roomID, userID)
		jr.UnreadNotifications = &unreadCounts{NotificationCount: n, HighlightCount: h}
		return
	}
	p.UnreadByThread(roomID, userID, func(thread string, n, h int) {
		if thread == "" {
			jr.UnreadNotifications = &unreadCounts{NotificationCount: n, HighlightCount: h}
			return
		}
		if jr.UnreadThreads == nil {
			jr.UnreadThreads = map[string]*unreadCounts{}
		}
		jr.UnreadThreads[thread] = &unreadCounts{NotificationCount: n, HighlightCount: h}
	})
	if jr.UnreadNotifications == nil {
		jr.UnreadNotifications = &unreadCounts{}
	}
}

// ClientEvents renders events by ID in the client format (for
// /notifications); IDs not found are left out.
func (s *Service) ClientEvents(ctx context.Context, ids []string) (map[string]json.RawMessage, error) {
	evs, err := s.eventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	now := nowMS()
	out := make(map[string]json.RawMessage, len(evs))
	for id, ce := range evs {
		out[id] = ce.JSON(now)
	}
	return out, nil
}
