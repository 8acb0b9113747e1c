package filter

import "testing"

func TestHasURL(t *testing.T) {
	tests := []struct {
		content string
		want    bool
	}{
		{`{"url":"mxc://x/y"}`, true},
		{`{"url":""}`, true},
		{` { "body" : "x" , "url" : "mxc://x/y" } `, true},
		{`{"msgtype":"m.image","info":{"w":1,"h":[1,2,{"url":3}]},"url":"mxc://a/b"}`, true},
		{`{"\u0075rl":"mxc://x/y"}`, true},
		{`{"url":1}`, false},
		{`{"url":null}`, false},
		{`{"url":{"a":"b"}}`, false},
		{`{"url":["mxc://x/y"]}`, false},
		{`{"info":{"url":"mxc://x/y"}}`, false},
		{`{"body":"\"url\":\"x\""}`, false},
		{`{"URL":"x"}`, false},
		{`{"urls":"x"}`, false},
		{`{}`, false},
		{`[]`, false},
		{``, false},
		{`"url"`, false},
		{`{"url":"a","url":1}`, false},
		{`{"url":1,"url":"a"}`, true},
		{`{"body":"a\\","url":"x"}`, true},
		// Malformed input: never true by accident, never a panic.
		{`{"url":"x"`, false},
		{`{"url"`, false},
		{`{"url":`, false},
		{`{"a":{"b":"`, false},
		{`{"a" 1}`, false},
	}
	for _, tt := range tests {
		if got := HasURL([]byte(tt.content)); got != tt.want {
			t.Errorf("HasURL(%s) = %v, want %v", tt.content, got, tt.want)
		}
	}
}

func TestHasURLDoesNotAllocate(t *testing.T) {
	c := []byte(`{"body":"image.png","info":{"mimetype":"image/png","size":1234,"w":10,"h":10},"msgtype":"m.image","url":"mxc://example.com/abc"}`)
	if n := testing.AllocsPerRun(1000, func() { _ = HasURL(c) }); n != 0 {
		t.Fatalf("HasURL allocates %v times per call", n)
	}
}
