// Package synctoken is the sync token: one position per stream (events,
// receipts, account data, typing, to-device, device lists, presence,
// peeks). /sync hands it out as next_batch and reads it back as since; the
// notifier keeps the current one; the stream readers take its positions.
// It imports nothing of the sync engine, so every part of it can use it.
//
// Tables: none. Goroutines: none. Locks: none.
package synctoken
