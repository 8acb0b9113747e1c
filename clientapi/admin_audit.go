package clientapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
	"github.com/haven-chat/haven/storage"
)

// adminPrefix is where the admin API lives; every call under it is audited.
const adminPrefix = "/_synapse/admin/"

// auditRecorder records audited actions (internal/audit).
type auditRecorder interface {
	Record(ctx context.Context, e audit.Entry)
}

// auditQuerier searches the audit log (internal/audit).
type auditQuerier interface {
	Query(ctx context.Context, f audit.Filter) ([]audit.Record, error)
}

// audited wraps the handler of an admin API route so that each call, made
// or refused (no token, not an admin, bad input), is recorded: the action
// ("admin." and the route's AuditOp, or its method and path), the caller,
// the user or room in the path, the client's address and the outcome.
func (a *API) audited(rt Route, next httpx.HandlerFunc) httpx.HandlerFunc {
	if a.Audit == nil || !strings.HasPrefix(rt.Path, adminPrefix) {
		return next
	}
	action := "admin." + rt.AuditOp
	if rt.AuditOp == "" {
		action = "admin." + rt.Method + " " + strings.TrimPrefix(rt.Path, "/_synapse/admin")
	}
	return func(w http.ResponseWriter, r *http.Request) error {
		err := next(w, r)
		e := audit.Entry{Action: action, Addr: clientAddr(r), OK: err == nil}
		if ri := httpx.Info(r.Context()); ri != nil {
			e.Actor = ri.UserID
		}
		// What the path names, cut short: anyone may send a long path.
		e.Target = auditText(PathParam(r, "userId"))
		if e.Target == "" {
			e.Target = auditText(PathParam(r, "roomId"))
		}
		if d := auditText(PathParam(r, "deviceId")); d != "" {
			e.Detail = map[string]any{"device_id": d}
		}
		if err != nil {
			code := "M_UNKNOWN"
			if me, ok := merr.As(err); ok {
				code = me.Code
			}
			if e.Detail == nil {
				e.Detail = map[string]any{}
			}
			e.Detail["errcode"] = code
		}
		a.Audit.Record(context.WithoutCancel(r.Context()), e)
		return err
	}
}

// auditText is a path parameter as the audit log keeps it: at most 255
// bytes, and nothing the database cannot store.
func auditText(s string) string {
	if !storage.StorableText(s) {
		return ""
	}
	if len(s) > 255 {
		s = strings.ToValidUTF8(s[:255], "")
	}
	return s
}

// AuditArea is Haven's own addition to the admin API: GET
// /_synapse/admin/v1/audit searches the audit log.
func (a *API) AuditArea(log auditQuerier) func() []Route {
	return func() []Route {
		return []Route{{Method: "GET", Path: adminV1 + "/audit", H: func(w http.ResponseWriter, r *http.Request) error {
			return adminAudit(w, r, log)
		}, Auth: authAdmin, AuditOp: "audit.query"}}
	}
}

// adminAudit answers ?user, ?action (exact, or a prefix ending in "."),
// ?since and ?until (Unix ms), ?from (the next_token of the page before)
// and ?limit, newest first.
func adminAudit(w http.ResponseWriter, r *http.Request, log auditQuerier) error {
	q := r.URL.Query()
	f := audit.Filter{User: q.Get("user"), Action: q.Get("action")}
	if len(f.User) > 255 || len(f.Action) > 255 || !storage.StorableText(f.User) || !storage.StorableText(f.Action) {
		return merr.InvalidParam("user and action must be text of at most 255 bytes")
	}
	ms := func(name string) (time.Time, error) {
		v := q.Get(name)
		if v == "" {
			return time.Time{}, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > 1<<53 {
			return time.Time{}, merr.InvalidParam("%s must be a time in Unix milliseconds", name)
		}
		return time.UnixMilli(n), nil
	}
	var err error
	if f.Since, err = ms("since"); err != nil {
		return err
	}
	if f.Until, err = ms("until"); err != nil {
		return err
	}
	if v := q.Get("from"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return merr.InvalidParam("from must be a next_token of this endpoint")
		}
		f.Before = n
	}
	limit, err := queryInt(r, "limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	f.Limit = limit
	entries, err := log.Query(r.Context(), f)
	if err != nil {
		return err
	}
	if entries == nil {
		entries = []audit.Record{}
	}
	body := map[string]any{"entries": entries}
	if len(entries) == limit {
		body["next_token"] = strconv.FormatInt(entries[len(entries)-1].ID, 10)
	}
	return httpx.JSON(w, http.StatusOK, body)
}
