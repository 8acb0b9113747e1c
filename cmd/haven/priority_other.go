//go:build !linux

package main

// lowerPriority does nothing here: the backup's rate limit paces it.
func lowerPriority() {}
