package roomserver

import "encoding/json"

// textRepresentation is one entry of m.topic's m.text (spec v1.15): the
// topic in one mimetype.
type textRepresentation struct {
	MimeType *string `json:"mimetype"`
	Body     *string `json:"body"`
}

// newTopicContent is what createRoom's topic becomes: the plain text in
// topic and as m.topic's one text/plain representation (whose mimetype
// may be left out).
func newTopicContent(topic string) map[string]any {
	return map[string]any{
		"topic":   topic,
		"m.topic": map[string]any{"m.text": []map[string]string{{"body": topic}}},
	}
}

// PlainTopic is the plain-text topic of an m.room.topic content, for the
// room directory, room summaries and search: the first text/plain
// representation in m.topic (a representation without a mimetype is
// text/plain), else topic. Representations that are not objects with a
// string body are skipped, and an m.topic that does not parse is ignored,
// as receivers use the first representation they understand.
func PlainTopic(content []byte) string {
	var c struct {
		Topic  json.RawMessage `json:"topic"`
		MTopic json.RawMessage `json:"m.topic"`
	}
	if json.Unmarshal(content, &c) != nil {
		return ""
	}
	var m struct {
		Text []json.RawMessage `json:"m.text"`
	}
	if len(c.MTopic) > 0 && json.Unmarshal(c.MTopic, &m) == nil {
		for _, raw := range m.Text {
			var r textRepresentation
			if json.Unmarshal(raw, &r) != nil || r.Body == nil {
				continue
			}
			if r.MimeType == nil || *r.MimeType == "text/plain" {
				return *r.Body
			}
		}
	}
	var topic string
	if json.Unmarshal(c.Topic, &topic) != nil {
		return ""
	}
	return topic
}
