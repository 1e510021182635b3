package proxy

import (
	"net/http"
	"time"
)

// NewServer returns an http.Server with the proxy's limits: header size,
// header and idle timeouts. Bodies and responses have no overall timeout:
// uploads, streamed replies, server-sent events and WebSockets run as long
// as they need; API bodies are bounded by Config.MaxAPIBodyBytes.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}
