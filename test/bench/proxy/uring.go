package main

import (
	"net"
	"runtime"
	"syscall"

	"github.com/agenthost/agenthost/internal/uring"
)

// uringForwarder is the floor forwarder on io_uring: one ring per core,
// each on an OS thread of its own, where one system call submits every
// operation queued since the last and collects what has completed — the
// kernel is entered once per batch of requests rather than four times per
// request, which is where a forwarder's time goes on a virtual machine.
// Like the floor, it is a yardstick, not a proxy: a request head arrives in
// one read and is sent in one, and a relay's id may be reused while a
// cancelled operation of the connection that had it is still to complete
// (connections close only when wrk stops).
func uringForwarder(listen, backend string, rings int) error {
	lfd, bsa, err := forwarderSockets(listen, backend)
	if err != nil {
		return err
	}
	added := forwardingHeaders(backend)
	errs := make(chan error, rings)
	for range rings {
		go func() { errs <- uringLoop(lfd, bsa, added) }()
	}
	return <-errs
}

// forwarderSockets opens the listening socket and resolves the backend.
func forwarderSockets(listen, backend string) (int, *syscall.SockaddrInet4, error) {
	addr, err := net.ResolveTCPAddr("tcp", listen)
	if err != nil {
		return 0, nil, err
	}
	bAddr, err := net.ResolveTCPAddr("tcp", backend)
	if err != nil {
		return 0, nil, err
	}
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, nil, err
	}
	syscall.SetsockoptInt(lfd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	var sa syscall.SockaddrInet4
	copy(sa.Addr[:], addr.IP.To4())
	sa.Port = addr.Port
	if err := syscall.Bind(lfd, &sa); err != nil {
		return 0, nil, err
	}
	if err := syscall.Listen(lfd, 4096); err != nil {
		return 0, nil, err
	}
	var bsa syscall.SockaddrInet4
	copy(bsa.Addr[:], bAddr.IP.To4())
	bsa.Port = bAddr.Port
	return lfd, &bsa, nil
}

func forwardingHeaders(backend string) []byte {
	return []byte("Host: " + backend + "\r\nAuthorization: Basic b3BlbmNvZGU6YmVuY2gtcGFzc3dvcmQ=\r\n" +
		"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n")
}

// dialBackend connects to the backend; on loopback connect is immediate,
// so it blocks.
func dialBackend(backend *syscall.SockaddrInet4) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	if err := syscall.Connect(fd, backend); err != nil {
		syscall.Close(fd)
		return 0, err
	}
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	return fd, nil
}

// What a completion is for, in the low bits of its user data; the rest is
// the relay's index.
const (
	kindAccept = iota
	kindClientRecv
	kindBackendRecv
	kindSend
	kindBits = 2
)

type uringRelay struct {
	client, backend int
	in, out         []byte
}

func uringLoop(lfd int, backend *syscall.SockaddrInet4, added []byte) error {
	runtime.LockOSThread()
	r, err := uring.New(1024)
	if err != nil {
		return err
	}
	var relays []*uringRelay
	var free []int
	// The ring is sized so that its queue never fills: a loop queues at
	// most two operations per completion it reaps.
	recv := func(fd int, buf []byte, id int, kind uint64) {
		r.Recv(fd, buf, uint64(id)<<kindBits|kind, false)
	}
	send := func(fd int, buf []byte, id int) {
		// Linked: the receive queued next, into the same buffer, waits
		// for the send.
		r.Send(fd, buf, uint64(id)<<kindBits|kindSend, true)
	}
	accept := func() { r.Accept(lfd, kindAccept) }
	closeRelay := func(id int) {
		rl := relays[id]
		if rl == nil {
			return
		}
		syscall.Close(rl.client)
		syscall.Close(rl.backend)
		relays[id] = nil
		free = append(free, id)
	}
	accept()
	for {
		if err := r.Enter(1); err != nil {
			return err
		}
		r.Completions(func(c uring.Completion) {
			id, kind := int(c.UserData>>kindBits), c.UserData&(1<<kindBits-1)
			switch kind {
			case kindAccept:
				accept()
				if c.Res < 0 {
					return
				}
				cfd := int(c.Res)
				bfd, err := dialBackend(backend)
				if err != nil {
					syscall.Close(cfd)
					return
				}
				syscall.SetsockoptInt(cfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
				rl := &uringRelay{client: cfd, backend: bfd, in: make([]byte, 16<<10), out: make([]byte, 0, 16<<10)}
				if n := len(free); n > 0 {
					id, free = free[n-1], free[:n-1]
					relays[id] = rl
				} else {
					id = len(relays)
					relays = append(relays, rl)
				}
				recv(cfd, rl.in, id, kindClientRecv)
			case kindClientRecv, kindBackendRecv:
				rl := relays[id]
				if rl == nil {
					return
				}
				if c.Res <= 0 {
					closeRelay(id)
					return
				}
				data := rl.in[:c.Res]
				if kind == kindClientRecv {
					rl.out = rewriteHead(rl.out[:0], data, added)
					send(rl.backend, rl.out, id)
					recv(rl.backend, rl.in, id, kindBackendRecv)
				} else {
					send(rl.client, data, id)
					recv(rl.client, rl.in, id, kindClientRecv)
				}
			case kindSend:
				if c.Res < 0 {
					closeRelay(id)
				}
			}
		})
	}
}
