package userapi

import "context"

// devicesChanged tells the device list stream (Options.DeviceLists) that
// devices of userID were added or deleted; call it after the commit.
func (s *Service) devicesChanged(ctx context.Context, userID string, added, deleted []string) {
	if s.opts.DeviceLists == nil || (len(added) == 0 && len(deleted) == 0) {
		return
	}
	s.opts.DeviceLists.DevicesChanged(ctx, userID, added, deleted)
}

// deviceRenamed tells the device list stream that a device of userID was
// renamed (its name is in other users' /keys/query answers).
func (s *Service) deviceRenamed(ctx context.Context, userID, deviceID string) {
	if s.opts.DeviceLists != nil {
		s.opts.DeviceLists.DeviceRenamed(ctx, userID, deviceID)
	}
}
