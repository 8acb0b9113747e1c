package syncapi

// ForgetEvents drops what the caches hold of events an admin removed from
// the database (a history purge or a purged room): the room's recent
// events, the events' rendered copies, and the relation aggregates of the
// events they related to (and their own). Later reads go to the database,
// where the events no longer are.
func (s *Service) ForgetEvents(roomID string, eventIDs, parents []string) {
	s.recent.Remove(roomID)
	for _, id := range eventIDs {
		s.rendered.Remove(id)
		s.rel.invalidate(id)
	}
	for _, p := range parents {
		s.rel.invalidate(p)
	}
}
