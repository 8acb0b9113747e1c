package appservice

import (
	"crypto/sha256"
	"slices"
)

// Registry is the set of configured application services, with lookups by
// token and ID and the namespace questions the rest of Haven asks. It never
// changes after it is made, so it needs no lock.
type Registry struct {
	regs    []*Registration
	byToken map[[32]byte]*Registration
	byID    map[string]*Registration
}

// NewRegistry indexes registrations that Load accepted.
func NewRegistry(regs []*Registration) *Registry {
	g := &Registry{regs: regs, byToken: map[[32]byte]*Registration{}, byID: map[string]*Registration{}}
	for _, r := range regs {
		g.byToken[sha256.Sum256([]byte(r.ASToken))] = r
		g.byID[r.ID] = r
	}
	return g
}

// All lists the services in the order of the configuration.
func (g *Registry) All() []*Registration { return g.regs }

// ByToken returns the service whose as_token this is, or nil. The token is
// looked up by its hash, so the lookup's time says nothing about it.
func (g *Registry) ByToken(token string) *Registration {
	if g == nil || token == "" {
		return nil
	}
	return g.byToken[sha256.Sum256([]byte(token))]
}

// ByID returns the service with this ID, or nil.
func (g *Registry) ByID(id string) *Registration {
	if g == nil {
		return nil
	}
	return g.byID[id]
}

func matchAny(list []Namespace, s string, exclusiveOnly bool) bool {
	for _, n := range list {
		if (!exclusiveOnly || n.Exclusive) && n.Match(s) {
			return true
		}
	}
	return false
}

// InUserNamespace tells whether a user ID is in one of the service's user
// namespaces, exclusive or not.
func (r *Registration) InUserNamespace(userID string) bool { return matchAny(r.Users, userID, false) }

// ControlsUser tells whether the service may act as the user: its sender,
// or a user in its namespaces.
func (r *Registration) ControlsUser(userID string) bool {
	return userID == r.Sender || r.InUserNamespace(userID)
}

// InAliasNamespace tells whether an alias is in one of the service's alias namespaces.
func (r *Registration) InAliasNamespace(alias string) bool { return matchAny(r.Aliases, alias, false) }

// InRoomNamespace tells whether a room ID is in one of the service's room namespaces.
func (r *Registration) InRoomNamespace(roomID string) bool { return matchAny(r.Rooms, roomID, false) }

// HasProtocol tells whether the service bridges a third-party protocol.
func (r *Registration) HasProtocol(p string) bool { return slices.Contains(r.Protocols, p) }

// ExclusiveUserOwner returns the ID of the service that holds the user ID
// in an exclusive namespace, or "". A service's sender is its own too.
func (g *Registry) ExclusiveUserOwner(userID string) string {
	if g == nil {
		return ""
	}
	for _, r := range g.regs {
		if userID == r.Sender || matchAny(r.Users, userID, true) {
			return r.ID
		}
	}
	return ""
}

// exclusiveAliasOwner returns the service that holds the alias in an
// exclusive namespace, or nil.
func (g *Registry) exclusiveAliasOwner(alias string) *Registration {
	for _, r := range g.regs {
		if matchAny(r.Aliases, alias, true) {
			return r
		}
	}
	return nil
}

// usersServices lists the services with the user in a namespace.
func (g *Registry) usersServices(userID string) []*Registration {
	var out []*Registration
	for _, r := range g.regs {
		if r.InUserNamespace(userID) {
			out = append(out, r)
		}
	}
	return out
}
