package sytest

import "testing"

// TestSlidingSyncJSSDK: sytest/js/sliding.mjs, matrix-js-sdk's SlidingSync
// (simplified sliding sync, MSC4186) with its Rust crypto instead of /sync:
// two password logins, an encrypted room, the invite seen in the invitee's
// lists with its name and counts, the join, and messages both ways that
// each side decrypts through the e2ee and to_device extensions; no client
// calls GET /sync.
func TestSlidingSyncJSSDK(t *testing.T) { runJSScenario(t, "sliding") }
