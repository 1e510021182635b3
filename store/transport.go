package store

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// raftStreamByte opens every Raft connection. HTTP/1 requests start with a
// letter and HTTP/2 with "PRI", so one byte tells Raft from ClusterService
// traffic and both share one port: a server's Raft address is also the
// address to forward writes to.
const raftStreamByte = 0x01

// classifyTimeout bounds how long a new connection may take to send its first byte.
const classifyTimeout = 10 * time.Second

// ClusterListener splits one TCP listener into Raft connections and HTTP
// (Connect ClusterService) connections.
type ClusterListener struct {
	ln        net.Listener
	advertise net.Addr
	raftConns chan net.Conn
	httpConns chan net.Conn
	raft      *raftLayer
	done      chan struct{}
	closeOnce sync.Once
}

// NewClusterListener starts splitting ln's connections. advertise is the
// address peers dial; it defaults to ln's own address.
func NewClusterListener(ln net.Listener, advertise string) (*ClusterListener, error) {
	addr := ln.Addr()
	if advertise != "" {
		tcp, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			return nil, err
		}
		addr = tcp
	}
	c := &ClusterListener{
		ln:        ln,
		advertise: addr,
		raftConns: make(chan net.Conn),
		httpConns: make(chan net.Conn),
		done:      make(chan struct{}),
	}
	c.raft = &raftLayer{c: c, closed: make(chan struct{})}
	go c.acceptLoop()
	return c, nil
}

// Addr is the advertised address.
func (c *ClusterListener) Addr() net.Addr { return c.advertise }

// Close stops accepting on both sides.
func (c *ClusterListener) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.done)
		err = c.ln.Close()
	})
	return err
}

func (c *ClusterListener) acceptLoop() {
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			select {
			case <-c.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				c.Close()
				return
			}
			// Out of file descriptors, an aborted handshake: transient.
			// Closing the listener here would cut the server off for good.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go c.classify(conn)
	}
}

func (c *ClusterListener) classify(conn net.Conn) {
	conn.SetReadDeadline(time.Now().Add(classifyTimeout))
	br := bufio.NewReader(conn)
	first, err := br.Peek(1)
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return
	}
	dest := c.httpConns
	var out net.Conn = &peekedConn{Conn: conn, r: br}
	if first[0] == raftStreamByte {
		br.Discard(1)
		dest = c.raftConns
	}
	var raftClosed chan struct{}
	if dest == c.raftConns {
		raftClosed = c.raft.closed // Raft has shut down: nobody will accept
	}
	select {
	case dest <- out:
	case <-c.done:
		conn.Close()
	case <-raftClosed:
		conn.Close()
	}
}

// peekedConn replays the bytes buffered while classifying.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// RaftLayer is the raft.StreamLayer over this listener.
func (c *ClusterListener) RaftLayer() raft.StreamLayer { return c.raft }

// HTTPListener yields the non-Raft connections, for an http.Server.
func (c *ClusterListener) HTTPListener() net.Listener { return &subListener{c: c, conns: c.httpConns} }

type raftLayer struct {
	c         *ClusterListener
	closed    chan struct{}
	closeOnce sync.Once
}

func (r *raftLayer) Accept() (net.Conn, error) {
	select {
	case conn := <-r.c.raftConns:
		return conn, nil
	case <-r.closed:
		return nil, net.ErrClosed
	case <-r.c.done:
		return nil, net.ErrClosed
	}
}

// Close stops Raft accepting; the shared listener stays open for HTTP until
// ClusterListener.Close.
func (r *raftLayer) Close() error {
	r.closeOnce.Do(func() { close(r.closed) })
	return nil
}

func (r *raftLayer) Addr() net.Addr { return r.c.advertise }

func (r *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", string(address), timeout)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write([]byte{raftStreamByte}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

type subListener struct {
	c     *ClusterListener
	conns chan net.Conn
}

func (s *subListener) Accept() (net.Conn, error) {
	select {
	case conn := <-s.conns:
		return conn, nil
	case <-s.c.done:
		return nil, net.ErrClosed
	}
}

func (s *subListener) Close() error   { return s.c.Close() }
func (s *subListener) Addr() net.Addr { return s.c.advertise }
