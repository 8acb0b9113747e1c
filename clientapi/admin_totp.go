package clientapi

import (
	"context"
	"net/http"

	"github.com/haven-chat/haven/internal/audit"
	"github.com/haven-chat/haven/internal/httpx"
	"github.com/haven-chat/haven/internal/merr"
)

// totpResetter removes a user's second factor (userapi/totp.Service).
type totpResetter interface {
	Reset(ctx context.Context, userID string) (bool, error)
}

// AdminTOTPArea is Haven's extension of the admin API for two-factor
// sign-in: DELETE /_synapse/admin/v1/users/{userId}/totp removes the user's
// TOTP secret and recovery codes (the user sets up a new one at the next
// sign-in when the policy requires it).
func (a *API) AdminTOTPArea(svc totpResetter) func() []Route {
	return func() []Route {
		return []Route{
			{Method: "DELETE", Path: adminV1 + "/users/{userId}/totp", Auth: authAdmin, AuditOp: "user.totp_reset",
				H: func(w http.ResponseWriter, r *http.Request) error {
					userID, err := a.adminUserParam(r)
					if err != nil {
						return err
					}
					had, err := svc.Reset(r.Context(), userID)
					if err != nil {
						return err
					}
					if !had {
						return merr.NotFound("%s has no two-factor sign-in set up", userID)
					}
					if a.Audit != nil {
						a.Audit.Record(r.Context(), audit.Entry{Action: audit.TOTPChange, Actor: DeviceFrom(r).UserID, Target: userID,
							Addr: clientAddr(r), OK: true, Detail: map[string]any{"change": "reset", "by": "admin"}})
					}
					return httpx.OK(w)
				}},
		}
	}
}
