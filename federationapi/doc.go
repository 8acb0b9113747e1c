// Package federationapi will serve the Server-Server API for private
// federation between a company's sites: the key server, inbound transactions,
// outbound per-destination queues and the allowlist of peer servers. It is off
// by default and not built yet; the roomserver's input already accepts events
// with several prev_events and resolves state where branches meet, which is
// what inbound federation needs.
package federationapi
