package sytest

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// TestSecondProcessRefused: a second Haven on the same database refuses to
// start instead of writing beside the first (which would corrupt the
// streams' positions).
func TestSecondProcessRefused(t *testing.T) {
	eachDB(t, func(t *testing.T, s *server) {
		cmd := exec.Command(havenBin, "serve")
		cmd.Dir = s.dir
		cmd.Env = append(append([]string{}, s.env...), fmt.Sprintf("HAVEN_LISTEN=127.0.0.1:%d", freePort(t)))
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("second process started:\n%s", out)
		}
		if !strings.Contains(string(out), "already writing to this database") {
			t.Fatalf("second process output:\n%s", out)
		}
		// The first server is unaffected.
		s.register(t, "still-here")
	})
}
