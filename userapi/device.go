package userapi

// Device is an authenticated session: who made the request and from which device.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName string
	IsAdmin     bool
	// SessionID identifies the token in caches; it is the hash of the access token.
	SessionID string
}
