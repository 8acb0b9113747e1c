// Package mediaapi is Haven's media repository: uploads (direct, and async
// through /media/v1/create then PUT), downloads, thumbnails, the upload
// limit and per-user quotas, on a local file store. clientapi/media.go
// holds the HTTP handlers; this package holds the logic and the storage.
//
// Files live under data_dir/media, named by the SHA-256 of their bytes
// (media/ab/cd/abcd…). Identical uploads share one file; each upload still
// gets its own media ID and metadata row. An upload is streamed to a
// temporary file (media/tmp), counted against the limit while it arrives
// (never buffered in memory), fsynced and renamed under its hash; only then
// is its row written. A file whose row could not be written (quota, a lost
// race for an async ID) is removed again unless another row uses it.
//
// Safety: the uploaded Content-Type is kept (normalized); it is served
// inline only when it is on the spec's inline-safe list (images, audio,
// video, plain text...), otherwise as an attachment. Every download carries
// X-Content-Type-Options: nosniff and a sandboxing Content-Security-Policy;
// file names are sent as RFC 6266 filename / filename*=utf-8”.
//
// Limits: uploads above max_upload_bytes are refused with 413 M_TOO_LARGE,
// from the Content-Length when there is one, else as soon as the stream
// passes the limit. A per-user quota (the sum of the sizes of the user's
// uploads, identical ones counted each time) is answered with 413
// M_TOO_LARGE as well: the issue asks for that code, so clients show
// "too large"; the spec's own suggestion for quotas is 403 M_FORBIDDEN.
// A user may hold at most MaxPendingUploads unexpired IDs from /create
// (429 M_LIMIT_EXCEEDED beyond; /create also counts against the user's
// message rate limit in clientapi); unused IDs lapse after 24 hours.
//
// Thumbnails: JPEG, PNG, GIF and WebP, "scale" (fit within the box) and
// "crop" (fill the box, centre cut), never scaled up: when the original is
// no larger than asked, the original is served. The spec's standard sizes
// (32x32 and 96x96 crop, 320x240, 640x480 and 800x600 scale) are made
// together from one decode on the first request for any of them, and kept
// (a file plus a row in media_thumbnails keyed by the original's hash, so
// identical uploads share them); other sizes are made on each request.
// Images larger than MaxThumbnailPixels are refused (413) from their header,
// before decoding. Output is JPEG when opaque, PNG with transparency; with
// animated=true an animated GIF stays animated (every frame scaled), other
// requests and GIFs with too many frames get the first frame. Animated WebP
// cannot be decoded here: its thumbnail is the original, which clients
// show and animate themselves. At most ThumbnailWorkers thumbnails are made at once (a
// semaphore); uploads never wait for thumbnails. The thumbnail cache's
// hits and misses are counted in haven_cache_lookups_total{cache="media_thumbnails"}.
//
// Remote media (remote.go; another server name in the mxc:// URI). With
// federation off (no Options.Remote) it answers 404 M_NOT_FOUND. With it
// on, a server outside the allowlist (Options.RemoteAllowed) is 403
// M_FORBIDDEN before the cache is looked at or anything is sent. Otherwise
// the cache (table remote_media: origin, media ID, type, name, size, hash,
// created and last-access times) answers; on a miss the media is fetched
// once through the RemoteFetcher (federationapi.MediaFetcher: the signed
// federation endpoint, or the legacy one for older servers), and requests
// arriving meanwhile wait for that same fetch (single flight, keyed by
// origin and media ID). The fetch runs detached from the request that
// started it, bounded by RemoteFetchTimeout (5 minutes), so a client that
// gives up aborts nothing and the result is kept. Its bytes are staged like
// an upload (a temporary file, counted against max_upload_bytes, checked
// against the declared size, renamed under their hash), and the row is
// written only then: a broken or oversized transfer is neither served nor
// kept (502 M_UNKNOWN / M_TOO_LARGE). An answer that points elsewhere
// (a Location) is followed with the URL preview's guarded client (no
// private addresses). timeout_ms is passed on (for uploads still pending
// there); allow_remote=false (LocalOnly) answers from the cache only. A
// cached row whose file is missing is fetched again. Thumbnails of remote
// media are made here from the cached original, exactly as for local
// media (same sizes, same cache keyed by the content hash), rather than
// asked of the other server: one fetch serves every size, they keep
// working while the other server is down, and nothing the other server
// chose to send as a "thumbnail" is trusted. last_access_ts is written at
// most hourly per media; PurgeRemoteCache (the admin API's
// purge_media_cache) deletes rows not accessed since a time, and their
// files and thumbnails when nothing else uses them (a file can be shared
// with local uploads of the same bytes). Cache hits and misses are counted
// in haven_cache_lookups_total{cache="remote_media"}.
//
// URL previews (preview.go, media.url_previews, off by default: then 404
// M_UNRECOGNIZED as on a server without them): the page is fetched with a
// timeout, a size cap and at most five redirects by a client whose dialer
// checks the address of every connection as it is made (after name
// resolution, also for redirects: DNS rebinding gains nothing) against the
// built-in special ranges (private, loopback, link-local, multicast, ...;
// internal/netguard, shared with push gateways and federation) and the
// configured ones, and that uses no proxy. og: tags of the head,
// with <title> and the description meta as fallbacks, are answered;
// og:image is fetched the same way and stored as server-owned media (no
// user, no quota), answered as its mxc:// URI with size, type and
// dimensions. Answers are kept in memory (bounded, an hour); at most four
// previews fetch at once.
//
// Admin (admin.go): a user's uploads listed and ordered (UserMedia),
// deletion of a media ID (its row; its file and thumbnails once no other
// media ID has the same content, under hashLock), and quarantine
// (media.quarantined_by, migration 0026): quarantined media keeps its
// file but lookup answers 404 M_NOT_FOUND for it, so downloads and
// thumbnails are refused like unknown media. Protection
// (admin_protect.go, media.safe_from_quarantine, migration 0037): protected
// media is never quarantined and never deleted by DeleteOldMedia, the
// date-based clean-up (which also spares the media IDs it is told to keep:
// avatars).
//
// Tables: media, media_thumbnails (storage/migrations/0003_media.sql;
// media.quarantined_by from 0026_admin_rooms_media.sql,
// media.safe_from_quarantine from 0037), remote_media
// (0028_remote_media.sql).
// Goroutines: one sweeper (Start/Close) that deletes lapsed pending IDs
// and temporary files older than an hour (left by a crash), hourly; one per
// remote media being fetched (ended by Close, which waits for them). A crash
// between a file's rename and its row leaves an unused content file; it is
// harmless and not collected yet. Downloads of a pending ID wait (subscribe, re-check, wait) for
// its upload, up to timeout_ms (at most 60 s), then 504 M_NOT_YET_UPLOADED.
//
// Lock order: thumbLock (per original hash) → userLock (per user, only with
// a quota) → hashLock (per content hash: the file and its rows change
// together) → waitMu (a leaf). The thumbnail semaphore is taken inside
// thumbLock. No lock is held while waiting for a pending upload. flights.mu
// (the fetches under way) is a leaf, never held across I/O or a wait; no
// lock is held while a remote fetch runs or is waited for. A purge takes
// thumbLock → hashLock of an original, releases them, then the hashLock of
// each of its thumbnails' files in turn.
package mediaapi
