// Package origin carries the server name a federation request was
// authenticated as (its X-Matrix origin) in the request's context.
package origin

import "context"

type key struct{}

// With returns ctx carrying the authenticated origin server name.
func With(ctx context.Context, server string) context.Context {
	return context.WithValue(ctx, key{}, server)
}

// From returns the authenticated origin, or "" for an unauthenticated
// request (the key server's endpoints).
func From(ctx context.Context) string {
	s, _ := ctx.Value(key{}).(string)
	return s
}
