package server

import "github.com/haven-chat/haven/roomserver"

// spaceFetcher lets the space hierarchy ask other servers about rooms this
// server is not in (nil when federation is off).
func (a *App) spaceFetcher() roomserver.SpaceFetcher {
	if a.fed == nil {
		return nil
	}
	return a.fed.peers
}
