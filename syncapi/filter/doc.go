// Package filter is the Matrix event filter of the Client-Server API
// ("Filtering"): the body of POST /user/{userId}/filter, the filter
// parameter of /sync (a stored filter's ID or inline JSON) and the
// RoomEventFilter parameter of /messages and /context.
//
// Parse and ParseRoomEventFilter decode and validate filters, returning
// internal/merr kinds (M_NOT_JSON, M_BAD_JSON, M_TOO_LARGE); ParseQuery
// tells an inline filter from a filter ID. Compile turns a parsed filter
// into a matcher that the sync engine and /messages apply to each event
// without allocating: event types with the '*' wildcard, senders, rooms
// (not_* lists win over their allow lists) and contains_url (see HasURL).
// Limits are returned as set (0 when absent); EffectiveLimit applies the
// caller's default and maximum.
//
// Storing filters is userapi's business. This package owns no tables,
// starts no goroutines and takes no locks; matchers are immutable after
// Compile and safe for concurrent use.
package filter
