package push

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/haven-chat/haven/internal/config"
	"github.com/haven-chat/haven/internal/mailer"
	"github.com/haven-chat/haven/internal/mailer/smtptest"
	"github.com/haven-chat/haven/storage"
	"github.com/haven-chat/haven/storage/storagetest"
)

// TestEmailNotifications: an email pusher gets one email about the
// messages left unread for the delay, through a real SMTP conversation;
// nothing twice, nothing read, nothing to an address not on the account.
func TestEmailNotifications(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		e := newEnv(t, db)
		smtp := smtptest.Start(t, nil)
		m := mailer.New(config.Email{SMTPHost: smtp.Host, SMTPPort: smtp.Port, SMTPTLS: "none", From: "Haven <chat@example.com>"})
		// The checks run from the test, with a clock of its own.
		e.start(Options{Mail: m, EmailDelay: 10 * time.Minute, EmailEvery: time.Hour, ClientURL: "https://chat.example.com"})
		room := e.room(bob)
		email := SetPusherRequest{Pushkey: sp("alice@example.com"), Kind: json.RawMessage(`"email"`), AppID: sp("m.email"),
			AppDisplayName: sp("Email"), DeviceDisplayName: sp("alice@example.com"), Lang: sp("en"), Data: json.RawMessage(`{}`)}
		if err := e.ps.SetPusher(e.ctx, alice, "ADEV", email); err != nil {
			t.Fatal(err)
		}
		e.send(room, bob, `{"msgtype":"m.text","body":"hello <alice>"}`)
		e.send(room, bob, `{"msgtype":"m.text","body":"are you there?"}`)
		e.settle()
		n := e.ps.mail
		now := time.Now()

		// Not bound to alice's account: nothing is sent, and these
		// notifications are done with.
		n.checkAll(e.ctx, now.Add(time.Hour))
		if got := len(smtp.Mails()); got != 0 {
			t.Fatalf("%d emails to an address not on the account", got)
		}
		if _, err := db.Exec(e.ctx, `INSERT INTO user_threepids (medium, address, user_id, validated_ts, added_ts) VALUES ('email', 'alice@example.com', $1, 1, 1)`, alice); err != nil {
			t.Fatal(err)
		}
		e.send(room, bob, `{"msgtype":"m.text","body":"first"}`)
		e.send(room, bob, `{"msgtype":"m.text","body":"second"}`)
		e.settle()
		n.checkAll(e.ctx, now)
		if got := len(smtp.Mails()); got != 0 {
			t.Fatalf("%d emails before the delay", got)
		}
		n.checkAll(e.ctx, now.Add(11*time.Minute))
		mail := smtp.WaitFor(t, "the notification", func(smtptest.Mail) bool { return true })
		if mail.To[0] != "alice@example.com" || mail.Subject != "2 unread messages on test" || !strings.Contains(mail.Text, ": first") ||
			!strings.Contains(mail.Text, ": second") || strings.Contains(mail.Text, "are you there") || !strings.Contains(mail.HTML, "https://chat.example.com") {
			t.Fatalf("email %q\n%s", mail.Subject, mail.Text)
		}

		// Nothing twice; a message read in time is not emailed.
		_, pos := e.send(room, bob, `{"msgtype":"m.text","body":"third"}`)
		e.settle()
		e.ps.OnReceipt(e.ctx, room, alice, "", pos, 0)
		n.checkAll(e.ctx, now.Add(3*time.Hour))
		if got := len(smtp.Mails()); got != 1 {
			t.Fatalf("%d emails, want 1", got)
		}
		// After a restart, the progress is kept.
		e.stop()
		e.start(Options{Mail: m, EmailDelay: 10 * time.Minute, EmailEvery: time.Hour})
		e.ps.mail.checkAll(e.ctx, now.Add(5*time.Hour))
		if got := len(smtp.Mails()); got != 1 {
			t.Fatalf("%d emails after a restart, want 1", got)
		}
	})
}
