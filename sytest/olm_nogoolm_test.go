//go:build !goolm

package sytest

import "testing"

// The Olm machine tests (olm_test.go) run mautrix-go's crypto on goolm, its
// pure-Go Olm, which needs the goolm build tag (without it mautrix-go wants
// libolm through cgo). scripts/test.sh sets the tag.

func TestOlmMachine(t *testing.T) {
	t.Skip("built without -tags goolm: run go test -tags goolm (as scripts/test.sh does)")
}

func TestOlmMachineAcrossSites(t *testing.T) {
	t.Skip("built without -tags goolm: run go test -tags goolm (as scripts/test.sh does)")
}
