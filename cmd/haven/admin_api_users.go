package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// "haven admin users …": accounts through the admin API.

// apiUser is a user as the admin API answers it.
type apiUser struct {
	Name        string  `json:"name"`
	DisplayName *string `json:"displayname"`
	AvatarURL   *string `json:"avatar_url"`
	Admin       bool    `json:"admin"`
	IsGuest     bool    `json:"is_guest"`
	Deactivated bool    `json:"deactivated"`
	Erased      bool    `json:"erased"`
	UserType    *string `json:"user_type"`
	CreationTS  int64   `json:"creation_ts"` // seconds
	LastSeenTS  *int64  `json:"last_seen_ts"`
}

func runAdminUsers(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runFamily(ctx, "users", userSubcommands(), args, stdout, stderr)
}

func userSubcommands() []subcommand {
	return []subcommand{
		{name: "list", usage: "list accounts: [--name S] [--deactivated] [--guests] [--limit N]", flags: usersList},
		{name: "show", args: "USER", nargs: 1, usage: "one account", flags: usersShow},
		{name: "create", args: "USER", nargs: 1, usage: "make an account: [--admin] [--displayname D]; the password is asked for, or read from standard input", flags: usersCreate},
		{name: "deactivate", args: "USER", nargs: 1, usage: "deactivate an account (log out everywhere, leave every room): [--erase]", flags: usersDeactivate},
		{name: "reset-password", args: "USER", nargs: 1, usage: "set a new password (asked for, or read from standard input): [--logout-devices]", flags: usersResetPassword},
		{name: "set-admin", args: "USER true|false", nargs: 2, usage: "make or unmake a server admin", flags: usersSetAdmin},
		{name: "whois", args: "USER", nargs: 1, usage: "the user's sessions and addresses", flags: usersWhois},
		{name: "devices", args: "USER", nargs: 1, usage: "the user's devices", flags: usersDevices},
		{name: "delete-device", args: "USER DEVICE", nargs: 2, usage: "delete a device (logs it out)", flags: usersDeleteDevice},
	}
}

type apiAction = func(ctx context.Context, c *apiClient, args []string, o *output) error

func usersList(fs *flag.FlagSet) apiAction {
	name := fs.String("name", "", "users whose user ID or display name contains this")
	deactivated := fs.Bool("deactivated", false, "include deactivated accounts")
	guests := fs.Bool("guests", false, "include guest accounts")
	limit := fs.Int("limit", 100, "at most this many users")
	return func(ctx context.Context, c *apiClient, _ []string, o *output) error {
		if err := listLimit(*limit); err != nil {
			return err
		}
		q := url.Values{"guests": {strconv.FormatBool(*guests)}, "deactivated": {strconv.FormatBool(*deactivated)}}
		if *name != "" {
			q.Set("name", *name)
		}
		p, err := c.listPages(ctx, "/_synapse/admin/v2/users", q, "users", "total", "next_token", *limit)
		if err != nil {
			return err
		}
		return o.emitValue(map[string]any{"users": p.items, "total": p.total}, func(w io.Writer) {
			var rows [][]string
			for _, raw := range p.items {
				var u apiUser
				_ = json.Unmarshal(raw, &u)
				rows = append(rows, []string{u.Name, str(u.DisplayName), yesNo(u.Admin), yesNo(u.IsGuest), yesNo(u.Deactivated),
					msTime(secs(u.CreationTS)), msTime(u.LastSeenTS)})
			}
			printTable(w, []string{"USER ID", "DISPLAY NAME", "ADMIN", "GUEST", "DEACTIVATED", "CREATED (UTC)", "LAST SEEN (UTC)"}, rows)
			countLine(w, len(p.items), p.total, "users")
		})
	}
}

// secs turns seconds into milliseconds for msTime.
func secs(s int64) *int64 {
	v := s * 1000
	return &v
}

func userFields(u apiUser) [][2]string {
	userType := str(u.UserType)
	if userType == "" {
		userType = "regular"
	}
	return [][2]string{
		{"user ID", u.Name}, {"display name", str(u.DisplayName)}, {"avatar", str(u.AvatarURL)},
		{"admin", yesNo(u.Admin)}, {"guest", yesNo(u.IsGuest)}, {"type", userType},
		{"deactivated", yesNo(u.Deactivated)}, {"erased", yesNo(u.Erased)},
		{"created (UTC)", msTime(secs(u.CreationTS))}, {"last seen (UTC)", msTime(u.LastSeenTS)},
	}
}

func usersShow(*flag.FlagSet) apiAction {
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		id, err := c.user(args[0])
		if err != nil {
			return err
		}
		var u apiUser
		raw, err := c.do(ctx, "GET", path("/_synapse/admin/v2/users/%s", id), nil, nil, &u)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) { printFields(w, userFields(u)) })
	}
}

func usersCreate(fs *flag.FlagSet) apiAction {
	admin := fs.Bool("admin", false, "make the user a server admin")
	displayName := fs.String("displayname", "", "the user's display name (default: the name)")
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		id, err := c.user(args[0])
		if err != nil {
			return err
		}
		// PUT also changes an existing account: make sure there is none.
		_, err = c.call(ctx, "GET", path("/_synapse/admin/v2/users/%s", id), nil, nil)
		if err == nil {
			return &apiError{code: "M_USER_IN_USE", msg: id + " exists already (haven admin users show " + id + ")"}
		}
		if ae, ok := err.(*apiError); !ok || ae.code != "M_NOT_FOUND" {
			return err
		}
		pw, err := readPassword(o.stderr)
		if err != nil {
			return fmt.Errorf("no password: %v", err)
		}
		body := map[string]any{"password": pw, "admin": *admin}
		if *displayName != "" {
			body["displayname"] = *displayName
		}
		var u apiUser
		raw, err := c.do(ctx, "PUT", path("/_synapse/admin/v2/users/%s", id), nil, body, &u)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) {
			fmt.Fprintf(w, "created %s\n", u.Name)
			printFields(w, userFields(u))
		})
	}
}

func usersDeactivate(fs *flag.FlagSet) apiAction {
	erase := fs.Bool("erase", false, "also mark the account erased (GDPR erasure)")
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		id, err := c.user(args[0])
		if err != nil {
			return err
		}
		raw, err := c.do(ctx, "POST", path("/_synapse/admin/v1/deactivate/%s", id), nil, map[string]any{"erase": *erase}, nil)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) {
			if *erase {
				fmt.Fprintf(w, "%s deactivated and erased\n", id)
			} else {
				fmt.Fprintf(w, "%s deactivated\n", id)
			}
		})
	}
}

func usersResetPassword(fs *flag.FlagSet) apiAction {
	logout := fs.Bool("logout-devices", false, "also log out every device of the user")
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		id, err := c.user(args[0])
		if err != nil {
			return err
		}
		pw, err := readPassword(o.stderr)
		if err != nil {
			return fmt.Errorf("no password: %v", err)
		}
		raw, err := c.do(ctx, "POST", path("/_synapse/admin/v1/reset_password/%s", id), nil,
			map[string]any{"new_password": pw, "logout_devices": *logout}, nil)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) {
			fmt.Fprintf(w, "password of %s changed", id)
			if *logout {
				fmt.Fprint(w, "; every device logged out")
			}
			fmt.Fprintln(w)
		})
	}
}

func usersSetAdmin(*flag.FlagSet) apiAction {
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		id, err := c.user(args[0])
		if err != nil {
			return err
		}
		admin, err := boolArg(args[1])
		if err != nil {
			return err
		}
		raw, err := c.do(ctx, "PUT", path("/_synapse/admin/v1/users/%s/admin", id), nil, map[string]any{"admin": admin}, nil)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) {
			if admin {
				fmt.Fprintf(w, "%s is a server admin\n", id)
			} else {
				fmt.Fprintf(w, "%s is not a server admin\n", id)
			}
		})
	}
}

func usersWhois(*flag.FlagSet) apiAction {
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		id, err := c.user(args[0])
		if err != nil {
			return err
		}
		var who struct {
			Devices map[string]struct {
				Sessions []struct {
					Connections []struct {
						IP       string `json:"ip"`
						LastSeen int64  `json:"last_seen"`
					} `json:"connections"`
				} `json:"sessions"`
			} `json:"devices"`
		}
		raw, err := c.do(ctx, "GET", path("/_synapse/admin/v1/whois/%s", id), nil, nil, &who)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) {
			var rows [][]string
			for dev, d := range who.Devices {
				if len(d.Sessions) == 0 {
					rows = append(rows, []string{dev, "", ""})
				}
				for _, s := range d.Sessions {
					for _, conn := range s.Connections {
						rows = append(rows, []string{dev, conn.IP, msTime(&conn.LastSeen)})
					}
				}
			}
			sort.Slice(rows, func(i, j int) bool { return strings.Join(rows[i], "\x00") < strings.Join(rows[j], "\x00") })
			fmt.Fprintf(w, "%s\n", clean(id))
			printTable(w, []string{"DEVICE", "ADDRESS", "LAST SEEN (UTC)"}, rows)
		})
	}
}

func usersDevices(*flag.FlagSet) apiAction {
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		id, err := c.user(args[0])
		if err != nil {
			return err
		}
		var list struct {
			Devices []struct {
				DeviceID    string  `json:"device_id"`
				DisplayName *string `json:"display_name"`
				LastSeenIP  *string `json:"last_seen_ip"`
				LastSeenTS  *int64  `json:"last_seen_ts"`
			} `json:"devices"`
		}
		raw, err := c.do(ctx, "GET", path("/_synapse/admin/v2/users/%s/devices", id), nil, nil, &list)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) {
			var rows [][]string
			for _, d := range list.Devices {
				rows = append(rows, []string{d.DeviceID, str(d.DisplayName), str(d.LastSeenIP), msTime(d.LastSeenTS)})
			}
			printTable(w, []string{"DEVICE", "NAME", "LAST ADDRESS", "LAST SEEN (UTC)"}, rows)
		})
	}
}

func usersDeleteDevice(*flag.FlagSet) apiAction {
	return func(ctx context.Context, c *apiClient, args []string, o *output) error {
		id, err := c.user(args[0])
		if err != nil {
			return err
		}
		raw, err := c.do(ctx, "DELETE", path("/_synapse/admin/v2/users/%s/devices/%s", id, args[1]), nil, nil, nil)
		if err != nil {
			return err
		}
		return o.emit(raw, func(w io.Writer) { fmt.Fprintf(w, "device %s of %s deleted\n", clean(args[1]), id) })
	}
}
