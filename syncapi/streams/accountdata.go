package streams

import (
	"context"
	"encoding/json"
)

// AccountDataItem is one account data entry; RoomID is "" for global data.
type AccountDataItem struct {
	RoomID  string
	Type    string
	Content json.RawMessage
}

// accountDataSource is the user API's account data, as this stream reads it.
type accountDataSource interface {
	AccountDataSince(ctx context.Context, userID string, after, upto int64) ([]AccountDataItem, error)
}

// AccountData is the account data stream: a user's global and per-room
// entries, by position of the account data stream (the user API writes it).
type AccountData struct{ src accountDataSource }

// NewAccountData reads the account data stream from src.
func NewAccountData(src accountDataSource) *AccountData { return &AccountData{src: src} }

// Changes returns the user's account data changed in (after, upto] as
// events: the global entries globalOK keeps, and those of each room that
// roomOK keeps (a nil func keeps everything).
func (a *AccountData) Changes(ctx context.Context, userID string, after, upto int64, globalOK, roomOK func(typ string) bool) ([]json.RawMessage, map[string][]json.RawMessage, error) {
	items, err := a.src.AccountDataSince(ctx, userID, after, upto)
	if err != nil {
		return nil, nil, err
	}
	global, rooms := []json.RawMessage{}, map[string][]json.RawMessage{}
	for _, it := range items {
		ev := AccountDataEvent(it.Type, it.Content)
		if it.RoomID == "" {
			if globalOK == nil || globalOK(it.Type) {
				global = append(global, ev)
			}
		} else if roomOK == nil || roomOK(it.Type) {
			rooms[it.RoomID] = append(rooms[it.RoomID], ev)
		}
	}
	return global, rooms, nil
}

// AccountDataEvent wraps content (a JSON object the user API checked) as
// an account data event without encoding it again.
func AccountDataEvent(typ string, content json.RawMessage) json.RawMessage {
	b := make([]byte, 0, len(content)+len(typ)+24)
	b = append(b, `{"type":`...)
	b = AppendString(b, typ)
	b = append(b, `,"content":`...)
	b = append(b, content...)
	return append(b, '}')
}
