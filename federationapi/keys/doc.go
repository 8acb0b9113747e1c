// Package keys is the key layer of the Server-Server API:
//
//   - Server: our key server (GET /_matrix/key/v2/server, signed by our
//     active key, listing earlier keys under old_verify_keys) and the
//     notary (/_matrix/key/v2/query), which passes on other servers' signed
//     key answers with our signature added.
//   - Store: other servers' signing keys, fetched from each server itself
//     through a Fetcher (the federation client), checked (self-signed, for
//     the server asked), kept in memory and in the database until their
//     validity ends (capped at MaxKeyValidity after the fetch, the spec's
//     rule for room versions 5 and later). Lookups of one server share one
//     fetch; a failed fetch is remembered for a minute, and a server is not
//     fetched twice within 30 seconds. Store is a
//     gomatrixserverlib.JSONVerifier, for VerifyEventSignatures and the like.
//   - Authenticate: middleware verifying the X-Matrix signature of inbound
//     requests; the origin then is in the request's context
//     (federationapi/origin).
//
// gomatrixserverlib's KeyRing is not used: it reads the clock itself, has
// no shared fetches or negative cache, and stores every key it used after
// most verifications; the Store does the same checks with its pieces
// (ListKeyIDs, VerifyJSON, CheckKeys, PublicKeyLookupResult.WasValidAt).
//
// Tables: remote_server_keys (one row per server and key ID: the public
// key, valid_until_ts capped as above, expired_ts for a key from
// old_verify_keys, fetched_ts) and remote_server_key_responses (each
// server's latest signed answer, for the notary). Our own keys are
// internal/serverkey's server_keys.
//
// Goroutines: none of its own; a notary query runs up to 8 fetches at once
// for its duration. Lock order: Store.mu, then the lru caches' locks.
package keys
