package server

import (
	"github.com/haven-chat/haven/internal/mailer"
	"github.com/haven-chat/haven/userapi"
	"github.com/haven-chat/haven/userapi/push"
)

// mailSender is the configured SMTP server's mailer, or nil when email is
// off (email.smtp_host empty).
func (a *App) mailSender() userapi.MailSender {
	m := mailer.New(a.Cfg.Email)
	if m == nil {
		return nil
	}
	return m
}

// pushMail is the mailer of email notifications, or nil when email is off.
func (a *App) pushMail() push.MailSender {
	m := mailer.New(a.Cfg.Email)
	if m == nil {
		return nil
	}
	return m
}
