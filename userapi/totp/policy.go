package totp

import "context"

// Policy modes (config auth.totp).
const (
	Off      = "off"
	Optional = "optional"
	Required = "required"
)

// Policy decides who must give a second factor.
type Policy struct {
	// Mode is off, optional or required.
	Mode string
	// Admins makes the second factor required for admins under optional.
	Admins bool
	Svc    *Service
}

// Enabled tells whether two-factor sign-in is on.
func (p Policy) Enabled() bool { return p.Mode == Optional || p.Mode == Required }

// Required tells whether userID must sign in with a second factor: under
// required everyone; under optional those who set one up, and admins when
// Admins is set. Under off no one.
func (p Policy) Required(ctx context.Context, userID string, admin bool) (bool, error) {
	switch p.Mode {
	case Required:
		return true, nil
	case Optional:
		if p.Admins && admin {
			return true, nil
		}
		return p.Svc.Enrolled(ctx, userID)
	}
	return false, nil
}
