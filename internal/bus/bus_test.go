package bus

import (
	"context"
	"testing"
	"time"
)

func TestEmbeddedPublishSubscribe(t *testing.T) {
	ctx := context.Background()
	b, err := Start(ctx, Options{StoreDir: t.TempDir(), Namespace: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := make(chan string, 10)
	unsub, err := b.Subscribe("events", func(d []byte) { got <- string(d) })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	for _, m := range []string{"1", "2", "3"} {
		if err := b.Publish("events", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"1", "2", "3"} {
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("got %s want %s", m, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no message")
		}
	}
}

func TestExternalNATS(t *testing.T) {
	// .ci/run makes sure a NATS server with JetStream is on 127.0.0.1:4222.
	b, err := Start(context.Background(), Options{URL: "nats://127.0.0.1:4222", Namespace: "ext-test"})
	if err != nil {
		t.Fatalf("external NATS (started by .ci/run): %v", err)
	}
	defer b.Close()
	got := make(chan []byte, 1)
	unsub, _ := b.Subscribe("x", func(d []byte) { got <- d })
	defer unsub()
	_ = b.Publish("x", []byte("hi"))
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
	if err := Ping("nats://127.0.0.1:1", time.Second); err == nil {
		t.Fatal("ping of a closed port succeeded")
	}
}
