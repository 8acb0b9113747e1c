package syncapi

// RelationsCached tells whether the aggregate of an event is cached (for tests).
func RelationsCached(s *Service, eventID string) bool {
	_, ok := s.rel.c.Peek(eventID)
	return ok
}

// SlidingBuilds counts the sliding sync long-polls' builds (for tests).
func SlidingBuilds(s *Service) int64 { return s.slidingConns.builds.Load() }
