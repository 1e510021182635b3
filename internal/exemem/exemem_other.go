//go:build !linux

package exemem

// Release does nothing outside Linux.
func Release() error { return nil }
