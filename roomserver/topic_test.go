package roomserver

import (
	"encoding/json"
	"testing"
)

func TestPlainTopic(t *testing.T) {
	for _, c := range []struct {
		name, content, want string
	}{
		{"plain only", `{"topic":"Deploys"}`, "Deploys"},
		{"text/plain first", `{"topic":"x","m.topic":{"m.text":[{"mimetype":"text/plain","body":"plain"},{"body":"second"}]}}`, "plain"},
		{"html skipped", `{"topic":"x","m.topic":{"m.text":[{"mimetype":"text/html","body":"<i>h</i>"},{"body":"no mimetype is plain"}]}}`, "no mimetype is plain"},
		{"only html: topic", `{"topic":"fallback","m.topic":{"m.text":[{"mimetype":"text/html","body":"<i>h</i>"}]}}`, "fallback"},
		{"bad representations skipped", `{"topic":"x","m.topic":{"m.text":[5,{"mimetype":"text/plain"},{"body":7},{"body":"ok"}]}}`, "ok"},
		{"m.text not a list", `{"topic":"fallback","m.topic":{"m.text":"nope"}}`, "fallback"},
		{"m.topic not an object", `{"topic":"fallback","m.topic":[1]}`, "fallback"},
		{"empty plain body wins", `{"topic":"x","m.topic":{"m.text":[{"body":""}]}}`, ""},
		{"no topic", `{}`, ""},
		{"topic not a string", `{"topic":5}`, ""},
		{"not an object", `[`, ""},
	} {
		if got := PlainTopic([]byte(c.content)); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	// createRoom's topic: topic and one text/plain representation.
	b, _ := json.Marshal(newTopicContent("Team <chat>"))
	if string(b) != `{"m.topic":{"m.text":[{"body":"Team \u003cchat\u003e"}]},"topic":"Team \u003cchat\u003e"}` || PlainTopic(b) != "Team <chat>" {
		t.Errorf("createRoom topic content: %s", b)
	}
}
