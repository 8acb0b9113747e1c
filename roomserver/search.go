package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/haven-chat/haven/storage"
)

// searchField is the searchable text of an event: the field it comes from
// (content.body, content.name or content.topic) and the text. Only message
// bodies and the room's name and topic are indexed; anything else (and a
// field that is not a string) gives ok == false.
func searchField(e *Event) (field, text string, ok bool) {
	var key string
	switch {
	case e.Type == "m.room.message" && e.StateKey == nil:
		field, key = "content.body", "body"
	case e.Type == "m.room.name" && e.StateKey != nil && *e.StateKey == "":
		field, key = "content.name", "name"
	case e.Type == "m.room.topic" && e.StateKey != nil && *e.StateKey == "":
		field, key = "content.topic", "topic"
	default:
		return "", "", false
	}
	var ev struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(e.JSON, &ev) != nil {
		return "", "", false
	}
	if key == "topic" {
		// The plain text, from m.topic when it has some (spec v1.15).
		text = PlainTopic(ev.Content)
	} else {
		var c map[string]json.RawMessage
		if json.Unmarshal(ev.Content, &c) != nil {
			return "", "", false
		}
		raw, found := c[key]
		if !found || len(raw) == 0 || raw[0] != '"' {
			return "", "", false
		}
		if json.Unmarshal(raw, &text) != nil {
			return "", "", false
		}
	}
	// PostgreSQL text cannot hold NUL.
	text = strings.ReplaceAll(text, "\x00", "")
	if strings.TrimSpace(text) == "" {
		return "", "", false
	}
	return field, text, true
}

// unindexEvent removes a redacted event from the full-text index (the
// indexer skips events redacted before it reaches them).
func unindexEvent(ctx context.Context, tx *storage.Tx, pos int64) error {
	if _, err := tx.Exec(ctx, `DELETE FROM event_search WHERE rowid = $1`, pos); err != nil {
		return fmt.Errorf("unindex event at %d: %w", pos, err)
	}
	return nil
}
