// Package h2c makes the HTTP/2-without-TLS clients and server settings that
// agenthost's internal Connect services use on the cluster port. (Mutual TLS
// from a cluster CA is to replace it; until then, bind internal ports to
// private interfaces.)
package h2c

import (
	"net"
	"net/http"
	"time"
)

// NewClient returns a client that speaks HTTP/2 with prior knowledge, so one
// connection per peer carries every concurrent call and stream.
func NewClient() *http.Client {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:           protocols,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// ServerProtocols accepts HTTP/1.1 and HTTP/2 without TLS.
func ServerProtocols() *http.Protocols {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return protocols
}
