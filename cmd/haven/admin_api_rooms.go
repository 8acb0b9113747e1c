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

	"github.com/haven-chat/haven/clientapi"
)

// "haven admin rooms …": rooms through the admin API.

// apiRoom is a room as the admin API lists it (the list's entries are the
// same without the details' fields).
type apiRoom = clientapi.AdminRoomDetails

// statusPoll is how often a background job's status is asked for.
var statusPoll = 500 * time.Millisecond

func runAdminRooms(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runFamily(ctx, "rooms", roomSubcommands(), args, stdout, stderr)
}

func roomSubcommands() []subcommand {
	return []subcommand{
		{name: "list", usage: "list rooms: [--search S] [--order-by name|joined_members|…] [--limit N]", flags: roomsList},
		{name: "show", args: "ROOM", nargs: 1, usage: "a room's details (ROOM: a room ID or an alias)", flags: roomsShow},
		{name: "members", args: "ROOM", nargs: 1, usage: "a room's joined members", flags: roomsMembers},
		{name: "shutdown", args: "ROOM", nargs: 1, usage: "remove every local user from a room: [--block] [--purge] [--message M] (waits, showing progress)", flags: roomsShutdown},
		{name: "block", args: "ROOM true|false", nargs: 2, usage: "block or unblock a room for local users", flags: roomsBlock},
		{name: "purge-history", args: "ROOM", nargs: 1, usage: "delete a room's messages before a point: --before TIME|DURATION [--delete-local] (waits)", flags: roomsPurgeHistory},
	}
}

func roomsList(fs *flag.FlagSet) apiAction {
	search := fs.String("search", "", "rooms whose name, alias or ID contains this")
	orderBy := fs.String("order-by", "", "name (default), joined_members, joined_local_members, canonical_alias, creator, version, state_events, …")
	limit := fs.Int("limit", 100, "at most this many rooms")
	return func(ctx context.Context, c *apiClient, _ []string, o *output) error {
		if err := listLimit(*limit); err != nil {
			return err
		}
		q := url.Values{}
		if *search != "" {
			q.Set("search_term", *search)
		}
		if *orderBy != "" {
			q.Set("order_by", *orderBy)
		}
		p, err := c.listPages(ctx, "/_synapse/admin/v1/rooms", q, "rooms", "total_rooms", "next_batch", *limit)
		if err != nil {
			return err
		}
		return o.emitValue(map[string]any{"rooms": p.items, "total_rooms": p.total}, func(w io.Writer) {
			var rows [][]string
			for _, raw := range p.items {
				var r apiRoom
				_ = json.Unmarshal(raw, &r)
				rows = append(rows, []string{r.RoomID, str(r.Name), str(r.CanonicalAlias), strconv.FormatInt(r.JoinedMembers, 10),
					strconv.FormatInt(r.JoinedLocalMembers, 10), yesNo(r.Public), yesNo(r.Encryption != nil), r.Creator})
			}
			printTable(w, []string{"ROOM ID", "NAME", "ALIAS", "MEMBERS", "LOCAL", "PUBLIC", "ENCRYPTED", "CREATOR"}, rows)
			countLine(w, len(p.items), p.total, "rooms")
		})
	}
}

func roomsShow(*flag.FlagSet) apiAction {
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		id, err := c.room(ctx, args[0])
		if err != nil {
			return err
		}
		var r apiRoom
		raw, err := c.do(ctx, "GET", path("/_synapse/admin/v1/rooms/%s", id), nil, nil, &r)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) {
			printFields(w, [][2]string{
				{"room ID", r.RoomID}, {"name", str(r.Name)}, {"alias", str(r.CanonicalAlias)}, {"topic", str(r.Topic)},
				{"type", str(r.RoomType)}, {"version", r.Version}, {"creator", r.Creator},
				{"members", strconv.FormatInt(r.JoinedMembers, 10)}, {"local members", strconv.FormatInt(r.JoinedLocalMembers, 10)},
				{"local devices", strconv.Itoa(r.JoinedLocalDevices)},
				{"public", yesNo(r.Public)}, {"federated", yesNo(r.Federatable)}, {"encryption", str(r.Encryption)},
				{"join rule", str(r.JoinRules)}, {"guest access", str(r.GuestAccess)},
				{"history visibility", str(r.HistoryVisibility)}, {"state events", strconv.FormatInt(r.StateEvents, 10)},
			})
		})
	}
}

func roomsMembers(*flag.FlagSet) apiAction {
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		id, err := c.room(ctx, args[0])
		if err != nil {
			return err
		}
		var m struct {
			Members []string `json:"members"`
		}
		raw, err := c.do(ctx, "GET", path("/_synapse/admin/v1/rooms/%s/members", id), nil, nil, &m)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) {
			rows := make([][]string, len(m.Members))
			for i, u := range m.Members {
				local := "no"
				if strings.HasSuffix(u, ":"+c.serverName) {
					local = "yes"
				}
				rows[i] = []string{u, local}
			}
			printTable(w, []string{"MEMBER", "LOCAL"}, rows)
			countLine(w, len(m.Members), int64(len(m.Members)), "joined members")
		})
	}
}

// shutdownResult is what a room shutdown did.
type shutdownResult struct {
	KickedUsers       []string `json:"kicked_users"`
	FailedToKickUsers []string `json:"failed_to_kick_users"`
	LocalAliases      []string `json:"local_aliases"`
	NewRoomID         *string  `json:"new_room_id"`
}

func roomsShutdown(fs *flag.FlagSet) apiAction {
	block := fs.Bool("block", false, "block the room: no local user can join it again")
	purge := fs.Bool("purge", false, "delete everything the server stored of the room")
	message := fs.String("message", "", "tell the removed users this, in a new room you create for them")
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		id, err := c.room(ctx, args[0])
		if err != nil {
			return err
		}
		body := map[string]any{"block": *block, "purge": *purge}
		if *message != "" {
			body["new_room_user_id"] = c.userID
			body["message"] = *message
		}
		var started struct {
			DeleteID string `json:"delete_id"`
		}
		if _, err := c.do(ctx, "DELETE", path("/_synapse/admin/v2/rooms/%s", id), nil, body, &started); err != nil {
			return err
		}
		fmt.Fprintf(o.stderr, "shutting down %s (delete ID %s)\n", clean(id), clean(started.DeleteID))
		var st struct {
			Status       string         `json:"status"`
			Error        string         `json:"error"`
			ShutdownRoom shutdownResult `json:"shutdown_room"`
		}
		raw, err := c.poll(ctx, path("/_synapse/admin/v2/rooms/delete_status/%s", started.DeleteID), &st,
			func() string { return st.Status }, o.stderr, "complete", "failed")
		if err != nil {
			return err
		}
		if st.Status == "failed" {
			return fmt.Errorf("the shutdown of %s failed: %s", id, st.Error)
		}
		return o.emit(raw, func(w io.Writer) {
			r := st.ShutdownRoom
			fmt.Fprintf(w, "%s shut down\n", clean(id))
			printFields(w, [][2]string{
				{"removed users", strings.Join(r.KickedUsers, ", ")},
				{"not removed", strings.Join(r.FailedToKickUsers, ", ")},
				{"aliases moved or deleted", strings.Join(r.LocalAliases, ", ")},
				{"notice room", str(r.NewRoomID)},
				{"blocked", yesNo(*block)}, {"purged", yesNo(*purge)},
			})
		})
	}
}

// poll asks for a background job's status until it is one of final,
// saying on progress each status it passes through. It returns the last
// answer.
func (c *apiClient) poll(ctx context.Context, p string, into any, status func() string, progress io.Writer, final ...string) (json.RawMessage, error) {
	last := ""
	t := time.NewTicker(statusPoll)
	defer t.Stop()
	for {
		raw, err := c.do(ctx, "GET", p, nil, nil, into)
		if err != nil {
			return nil, err
		}
		s := status()
		if s != last {
			fmt.Fprintf(progress, "  %s %s\n", time.Now().UTC().Format("15:04:05"), clean(s))
			last = s
		}
		for _, f := range final {
			if s == f {
				return raw, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped waiting (the job goes on in the server; its status is at %s)", p)
		case <-t.C:
		}
	}
}

func roomsBlock(*flag.FlagSet) apiAction {
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		id, err := c.room(ctx, args[0])
		if err != nil {
			return err
		}
		block, err := boolArg(args[1])
		if err != nil {
			return err
		}
		raw, err := c.do(ctx, "PUT", path("/_synapse/admin/v1/rooms/%s/block", id), nil, map[string]any{"block": block}, nil)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) {
			if block {
				fmt.Fprintf(w, "%s is blocked: local users cannot join it\n", clean(id))
			} else {
				fmt.Fprintf(w, "%s is not blocked\n", clean(id))
			}
		})
	}
}

func roomsPurgeHistory(fs *flag.FlagSet) apiAction {
	before := fs.String("before", "", "delete messages before this: a duration back from now (90d, 12h) or a time (2026-01-31, 2026-01-31T08:00:00Z)")
	deleteLocal := fs.Bool("delete-local", false, "also delete messages of this server's users (kept by default: they may be the only copy)")
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		if *before == "" {
			return badArg("--before is required, for example --before 365d")
		}
		when, err := parseWhen(*before, time.Now())
		if err != nil {
			return badArg("--before: %v", err)
		}
		id, err := c.room(ctx, args[0])
		if err != nil {
			return err
		}
		var started struct {
			PurgeID string `json:"purge_id"`
		}
		if _, err := c.do(ctx, "POST", path("/_synapse/admin/v1/purge_history/%s", id), nil,
			map[string]any{"purge_up_to_ts": when.UnixMilli(), "delete_local_events": *deleteLocal}, &started); err != nil {
			return err
		}
		fmt.Fprintf(o.stderr, "purging the history of %s before %s (purge ID %s)\n", clean(id), when.UTC().Format("2006-01-02 15:04:05 UTC"), clean(started.PurgeID))
		var st struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		raw, err := c.poll(ctx, path("/_synapse/admin/v1/purge_history_status/%s", started.PurgeID), &st,
			func() string { return st.Status }, o.stderr, "complete", "failed")
		if err != nil {
			return err
		}
		if st.Status == "failed" {
			msg := st.Error
			if msg == "" {
				msg = "see the server's log"
			}
			return fmt.Errorf("the purge of %s failed: %s", id, msg)
		}
		return o.emit(raw, func(w io.Writer) {
			fmt.Fprintf(w, "history of %s before %s purged\n", clean(id), when.UTC().Format("2006-01-02 15:04:05 UTC"))
		})
	}
}
