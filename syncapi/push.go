package syncapi

import (
	"context"
	"encoding/json"

	"github.com/haven-chat/haven/roomserver"
	"github.com/haven-chat/haven/syncapi/streams"
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
	main, threads := s.counts.FromPush(roomID, userID, byThread)
	jr.UnreadNotifications = &unreadCounts{NotificationCount: main.Notifications, HighlightCount: main.Highlights}
	jr.UnreadThreads = threadCounts(threads)
}

// threadCounts are the counts per thread root in the wire form (nil when
// there are none).
func threadCounts(threads map[string]streams.Unread) map[string]*unreadCounts {
	var out map[string]*unreadCounts
	for root, c := range threads {
		if out == nil {
			out = make(map[string]*unreadCounts, len(threads))
		}
		out[root] = &unreadCounts{NotificationCount: c.Notifications, HighlightCount: c.Highlights}
	}
	return out
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
