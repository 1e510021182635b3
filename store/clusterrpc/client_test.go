package clusterrpc

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
)

// TestReadIndexLostOnTheWayIsRetryable: a leader that dies while answering
// a read index (here: a peer that accepts the connection and drops it) must
// leave the caller free to ask the next leader, as a read changes nothing —
// not fail the tenant's read with an internal error.
func TestReadIndexLostOnTheWayIsRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	c := NewClient()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.ForwardReadIndex(ctx, ln.Addr().String())
	if !errors.Is(err, store.ErrNoLeader) {
		t.Fatalf("a read index lost on the way: %v, want ErrNoLeader", err)
	}
}
