//go:build !unix

package loadtest

import "time"

// selfCPU is not available on this system.
func selfCPU() (time.Duration, bool) { return 0, false }
