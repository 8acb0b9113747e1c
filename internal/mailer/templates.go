package mailer

import (
	"bytes"
	"embed"
	"fmt"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
)

//go:embed templates/*.txt templates/*.html
var templateFS embed.FS

var (
	textTemplates = texttemplate.Must(texttemplate.ParseFS(templateFS, "templates/*.txt"))
	htmlTemplates = htmltemplate.Must(htmltemplate.ParseFS(templateFS, "templates/*.html"))
)

// Render makes a message from the templates named name (name.txt, whose
// "subject" block is the subject, and name.html) and data.
func Render(name, to string, data any) (Message, error) {
	var subj, text, html bytes.Buffer
	if err := textTemplates.ExecuteTemplate(&subj, name+".subject", data); err != nil {
		return Message{}, fmt.Errorf("email template %s subject: %w", name, err)
	}
	if err := textTemplates.ExecuteTemplate(&text, name+".txt", data); err != nil {
		return Message{}, fmt.Errorf("email template %s.txt: %w", name, err)
	}
	if err := htmlTemplates.ExecuteTemplate(&html, name+".html", data); err != nil {
		return Message{}, fmt.Errorf("email template %s.html: %w", name, err)
	}
	return Message{To: to, Subject: strings.TrimSpace(subj.String()), Text: strings.TrimLeft(text.String(), "\n"), HTML: html.String()}, nil
}

// ValidationData fills the validation templates (password_reset,
// add_email).
type ValidationData struct {
	ServerName string
	Address    string
	// Link opens the confirmation page; Token is what a client asks the
	// user to type instead.
	Link  string
	Token string
}

// NotificationData fills the notification template.
type NotificationData struct {
	ServerName string
	UserID     string
	// Link opens the client (public_baseurl, or matrix.to).
	Link  string
	Rooms []NotificationRoom
	// Total counts the unread notified messages, the shown ones and others.
	Total int
}

// NotificationRoom is one room's unread messages in a notification email.
type NotificationRoom struct {
	Name     string
	Messages []NotificationMessage
	// More counts the room's messages not shown.
	More int
}

// NotificationMessage is one message in a notification email.
type NotificationMessage struct {
	Sender string
	Body   string
	Time   string
}
