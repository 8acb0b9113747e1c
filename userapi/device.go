package userapi

// Device is an authenticated session: who made the request and from which device.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName string
	IsAdmin     bool
	// IsGuest: a guest account's device (guests.go).
	IsGuest bool
	// SessionID identifies the token in caches; it is the hash of the access token.
	SessionID string
	// AppService is the ID of the application service whose as_token made
	// the request (acting as its sender or as a user of its namespaces),
	// or empty. DeviceID is then empty unless the service named a device.
	AppService string
	// ExpiresTS is when the access token expires (Unix ms); 0 for never
	// (a session that did not ask for a refresh token).
	ExpiresTS int64
	// oldRefresh: the device's previous refresh token is still valid, until
	// this access token is first used.
	oldRefresh bool
}
