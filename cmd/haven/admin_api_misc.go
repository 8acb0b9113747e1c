package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// "haven admin tokens|media|stats": registration tokens, media and the
// server's statistics through the admin API.

func runAdminTokens(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runFamily(ctx, "tokens", []subcommand{
		{name: "list", usage: "the registration tokens", flags: tokensList},
		{name: "create", usage: "make a registration token: [--uses N] [--expires DURATION]", flags: tokensCreate},
		{name: "delete", args: "TOKEN", nargs: 1, usage: "delete a registration token", flags: tokensDelete},
	}, args, stdout, stderr)
}

// apiRegToken is a registration token as the admin API answers it.
type apiRegToken struct {
	Token       string `json:"token"`
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"`
}

func (t apiRegToken) row() []string {
	uses := "unlimited"
	if t.UsesAllowed != nil {
		uses = strconv.FormatInt(*t.UsesAllowed, 10)
	}
	expires := msTime(t.ExpiryTime)
	if expires == "" {
		expires = "never"
	}
	return []string{t.Token, uses, strconv.FormatInt(t.Pending, 10), strconv.FormatInt(t.Completed, 10), expires}
}

var regTokenHeader = []string{"TOKEN", "USES ALLOWED", "PENDING", "COMPLETED", "EXPIRES (UTC)"}

func tokensList(*flag.FlagSet) apiAction {
	return func(ctx context.Context, c *apiClient, _ []string, o *output) error {
		var list struct {
			Tokens []apiRegToken `json:"registration_tokens"`
		}
		raw, err := c.do(ctx, "GET", "/_synapse/admin/v1/registration_tokens", nil, nil, &list)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) {
			var rows [][]string
			for _, t := range list.Tokens {
				rows = append(rows, t.row())
			}
			printTable(w, regTokenHeader, rows)
		})
	}
}

func tokensCreate(fs *flag.FlagSet) apiAction {
	uses := fs.Int64("uses", 0, "how many registrations it allows (default: no limit)")
	expires := fs.String("expires", "", "how long it is valid: a duration such as 12h or 7d (default: no end)")
	return func(ctx context.Context, c *apiClient, _ []string, o *output) error {
		body := map[string]any{}
		if *uses < 0 {
			return badArg("--uses must be 1 or more")
		}
		if *uses > 0 {
			body["uses_allowed"] = *uses
		}
		if *expires != "" {
			d, ok := parseDays(*expires)
			if !ok || d <= 0 {
				return badArg("--expires %q: give a duration such as 12h or 7d", *expires)
			}
			body["expiry_time"] = time.Now().Add(d).UnixMilli()
		}
		var t apiRegToken
		raw, err := c.do(ctx, "POST", "/_synapse/admin/v1/registration_tokens/new", nil, body, &t)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) { printTable(w, regTokenHeader, [][]string{t.row()}) })
	}
}

func tokensDelete(*flag.FlagSet) apiAction {
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		raw, err := c.do(ctx, "DELETE", path("/_synapse/admin/v1/registration_tokens/%s", args[0]), nil, nil, nil)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) { fmt.Fprintf(w, "registration token %s deleted\n", clean(args[0])) })
	}
}

func runAdminMedia(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runFamily(ctx, "media", []subcommand{
		{name: "list", args: "USER", nargs: 1, usage: "a user's uploads, newest first: [--limit N]", flags: mediaList},
		{name: "quarantine", args: "SERVER/MEDIA", nargs: 1, usage: "stop serving a file (also mxc://SERVER/MEDIA)", flags: mediaQuarantine},
		{name: "delete", args: "SERVER/MEDIA", nargs: 1, usage: "delete a file of this server", flags: mediaDelete},
	}, args, stdout, stderr)
}

// mediaArg splits SERVER/MEDIA or mxc://SERVER/MEDIA.
func mediaArg(s string) (server, id string, err error) {
	server, id, ok := strings.Cut(strings.TrimPrefix(s, "mxc://"), "/")
	if !ok || server == "" || id == "" || strings.Contains(id, "/") {
		return "", "", badArg("%q is not SERVER/MEDIA_ID or mxc://SERVER/MEDIA_ID", s)
	}
	return server, id, nil
}

func mediaList(fs *flag.FlagSet) apiAction {
	limit := fs.Int("limit", 100, "at most this many files")
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		if err := listLimit(*limit); err != nil {
			return err
		}
		id, err := c.user(args[0])
		if err != nil {
			return err
		}
		p, err := c.listPages(ctx, path("/_synapse/admin/v1/users/%s/media", id), url.Values{"dir": {"b"}}, "media", "total", "next_token", *limit)
		if err != nil {
			return err
		}
		return o.emitValue(map[string]any{"media": p.items, "total": p.total}, func(w io.Writer) {
			var rows [][]string
			for _, raw := range p.items {
				var m struct {
					MediaID       string  `json:"media_id"`
					MediaType     string  `json:"media_type"`
					MediaLength   int64   `json:"media_length"`
					UploadName    *string `json:"upload_name"`
					CreatedTS     int64   `json:"created_ts"`
					QuarantinedBy *string `json:"quarantined_by"`
				}
				_ = json.Unmarshal(raw, &m)
				rows = append(rows, []string{"mxc://" + c.serverName + "/" + m.MediaID, m.MediaType, byteSize(m.MediaLength),
					str(m.UploadName), msTime(&m.CreatedTS), str(m.QuarantinedBy)})
			}
			printTable(w, []string{"MEDIA", "TYPE", "SIZE", "NAME", "UPLOADED (UTC)", "QUARANTINED BY"}, rows)
			countLine(w, len(p.items), p.total, "files")
		})
	}
}

func mediaQuarantine(*flag.FlagSet) apiAction {
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		server, id, err := mediaArg(args[0])
		if err != nil {
			return err
		}
		raw, err := c.do(ctx, "POST", path("/_synapse/admin/v1/media/quarantine/%s/%s", server, id), nil, struct{}{}, nil)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) {
			fmt.Fprintf(w, "mxc://%s/%s quarantined: it is no longer served\n", clean(server), clean(id))
		})
	}
}

func mediaDelete(*flag.FlagSet) apiAction {
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		server, id, err := mediaArg(args[0])
		if err != nil {
			return err
		}
		raw, err := c.do(ctx, "DELETE", path("/_synapse/admin/v1/media/%s/%s", server, id), nil, nil, nil)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) { fmt.Fprintf(w, "mxc://%s/%s deleted\n", clean(server), clean(id)) })
	}
}

func runAdminStats(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(stdout, "usage: haven admin stats [--days N] [--json] [--config FILE | --url URL --token TOKEN] [--as ADMIN]")
		return 0
	}
	// One command, no subcommands: dispatch as the family's only member.
	return runFamily(ctx, "stats", []subcommand{{name: "", usage: "the server's statistics: [--days N]", flags: statsServer}},
		append([]string{""}, args...), stdout, stderr)
}

func statsServer(fs *flag.FlagSet) apiAction {
	days := fs.Int("days", 7, "messages per day for this many days (1 to 90)")
	return func(ctx context.Context, c *apiClient, _ []string, o *output) error {
		if *days < 1 || *days > 90 {
			return badArg("--days must be between 1 and 90")
		}
		var s struct {
			ServerName         string `json:"server_name"`
			TotalUsers         int64  `json:"total_users"`
			DeactivatedUsers   int64  `json:"deactivated_users"`
			GuestUsers         int64  `json:"guest_users"`
			AdminUsers         int64  `json:"admin_users"`
			TotalRooms         int64  `json:"total_rooms"`
			PublicRooms        int64  `json:"public_rooms"`
			DailyMessages      int64  `json:"daily_messages"`
			DailyActiveUsers   int64  `json:"daily_active_users"`
			MonthlyActiveUsers int64  `json:"monthly_active_users"`
			MediaCount         int64  `json:"media_count"`
			MediaBytes         int64  `json:"media_bytes"`
			DatabaseEngine     string `json:"database_engine"`
			DatabaseSizeBytes  int64  `json:"database_size_bytes"`
			MessagesPerDay     []struct {
				Date  string `json:"date"`
				Count int64  `json:"count"`
			} `json:"messages_per_day"`
		}
		raw, err := c.do(ctx, "GET", "/_synapse/admin/v1/statistics/server", url.Values{"days": {strconv.Itoa(*days)}}, nil, &s)
		if err != nil {
			return err
		}
		n := func(v int64) string { return strconv.FormatInt(v, 10) }
		return o.emit(raw, func(w io.Writer) {
			printFields(w, [][2]string{
				{"server", s.ServerName},
				{"users", n(s.TotalUsers)}, {"admins", n(s.AdminUsers)}, {"guests", n(s.GuestUsers)}, {"deactivated", n(s.DeactivatedUsers)},
				{"active today", n(s.DailyActiveUsers)}, {"active in 30 days", n(s.MonthlyActiveUsers)},
				{"rooms", n(s.TotalRooms)}, {"public rooms", n(s.PublicRooms)}, {"messages in 24 hours", n(s.DailyMessages)},
				{"media files", n(s.MediaCount)}, {"media size", byteSize(s.MediaBytes)},
				{"database", s.DatabaseEngine + ", " + byteSize(s.DatabaseSizeBytes)},
			})
			if len(s.MessagesPerDay) > 0 {
				fmt.Fprintln(w)
				rows := make([][]string, len(s.MessagesPerDay))
				for i, d := range s.MessagesPerDay {
					rows[i] = []string{d.Date, n(d.Count)}
				}
				printTable(w, []string{"DAY (UTC)", "MESSAGES"}, rows)
			}
		})
	}
}
