package proxy

import (
	"net"
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

// NewServer returns an http.Server for the proxy (see the package's
// NewServer) that also counts its open client connections.
func (p *Proxy) NewServer() *http.Server {
	srv := NewServer(p)
	srv.ConnState = func(_ net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			p.metrics.connections.Inc()
		case http.StateHijacked, http.StateClosed:
			p.metrics.connections.Dec()
		}
	}
	return srv
}
