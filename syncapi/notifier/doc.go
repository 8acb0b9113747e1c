// Package notifier is the sync engine's wake-up machinery, shared by every
// sync API (/sync, GET /events, and sliding sync next).
//
// The Notifier keeps, in memory, who is joined to (invited to, peeking
// into) which room, the latest position of every stream per user, per
// device (to-device) and per room, the unread counts it knows, and the
// listeners of waiting long-polls. The sync engine (syncapi.Service) feeds
// it in order from the bus (On* methods); the stream readers
// (syncapi/streams) and the response builders read it (View, Members,
// CoMembers, MembershipOf, ...). A commit in room R wakes only R's members
// (and the event's target, and R's peekers).
//
// A long-poll subscribes, then samples, then waits:
//
//	l := n.Listen(user, device) // 1. register: a commit from now on wakes us
//	defer l.Close()
//	if n.HasNews(user, device, since) { ... build ... } // 2. sample, no query
//	select { case <-l.Wake(): case <-timer.C: case <-ctx.Done(): } // 3. wait
//
// Waiter (wait.go) is that loop for any Poll: Start answers at once or
// returns a Waiter with its listener registered; Wait holds a goroutine,
// Park none (the wake-up or the deadline answers on a wake worker).
//
// Tables: none (it is rebuilt from the database at start by its owner).
// Goroutines: eight wake workers that run parked long-polls' wake-ups (a
// short-lived goroutine per wake-up when all are busy, and per deadline).
// Lock order: Notifier.mu is a leaf lock; a Waiter's mu is taken before
// Notifier.mu (Listen, Close, OnWake), never the reverse.
package notifier
