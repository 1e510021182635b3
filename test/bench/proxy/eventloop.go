package main

import (
	"bytes"
	"runtime"
	"syscall"
)

// eventLoopForwarder is the floor forwarder built as nginx is: one event
// loop per core on an OS thread of its own, epoll and non-blocking sockets
// driven straight through system calls, bypassing Go's netpoller and
// scheduler — no goroutine is parked or woken per request. Per client
// connection it keeps one connection to the backend; request heads are
// rewritten as floorConn does, and the backend's bytes are passed back as
// they come. Like the floor, it is a yardstick, not a proxy: it assumes a
// request head arrives in one read and is written in one.
func eventLoopForwarder(listen, backend string, loops int) error {
	lfd, bsa, err := forwarderSockets(listen, backend)
	if err != nil {
		return err
	}
	added := forwardingHeaders(backend)
	errs := make(chan error, loops)
	for range loops {
		go func() { errs <- eventLoop(lfd, bsa, added) }()
	}
	return <-errs
}

type relay struct {
	client, backend int
}

func eventLoop(lfd int, backend *syscall.SockaddrInet4, added []byte) error {
	runtime.LockOSThread()
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	const epollExclusive = 1 << 28
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, lfd, &syscall.EpollEvent{Events: syscall.EPOLLIN | epollExclusive, Fd: int32(lfd)}); err != nil {
		return err
	}
	peers := map[int]*relay{}
	events := make([]syscall.EpollEvent, 128)
	in := make([]byte, 64<<10)
	out := make([]byte, 0, 64<<10)
	closeRelay := func(r *relay) {
		delete(peers, r.client)
		delete(peers, r.backend)
		syscall.Close(r.client)
		syscall.Close(r.backend)
	}
	for {
		n, err := syscall.EpollWait(epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == lfd {
				for {
					cfd, _, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
					if err != nil {
						break
					}
					bfd, err := dialBackend(backend)
					if err != nil {
						syscall.Close(cfd)
						continue
					}
					syscall.SetNonblock(bfd, true)
					syscall.SetsockoptInt(cfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
					r := &relay{client: cfd, backend: bfd}
					peers[cfd], peers[bfd] = r, r
					syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, cfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(cfd)})
					syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, bfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(bfd)})
				}
				continue
			}
			r := peers[fd]
			if r == nil {
				continue
			}
			m, err := syscall.Read(fd, in)
			if err == syscall.EAGAIN {
				continue
			}
			if err != nil || m == 0 {
				closeRelay(r)
				continue
			}
			data := in[:m]
			to := r.client
			if fd == r.client {
				to = r.backend
				data = rewriteHead(out[:0], data, added)
			}
			if _, err := syscall.Write(to, data); err != nil {
				closeRelay(r)
			}
		}
	}
}

// rewriteHead copies a request head, dropping Host and adding the
// forwarding headers before the blank line; what follows the head is
// dropped (the benchmark's requests have no body).
func rewriteHead(out, head, added []byte) []byte {
	for first := true; len(head) > 0; first = false {
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			break
		}
		line := head[:i+1]
		head = head[i+1:]
		if len(line) <= 2 {
			return append(out, added...)
		}
		if first || !bytes.HasPrefix(line, []byte("Host:")) {
			out = append(out, line...)
		}
	}
	return append(out, added...)
}
