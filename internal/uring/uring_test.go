//go:build linux

package uring

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// newTestRing is a ring owned by the test's goroutine, locked to its thread
// for the test's life (a ring set up for a single issuer refuses calls from
// another thread). Where the kernel refuses io_uring the test is skipped,
// except in CI, whose machines have it: there it fails.
func newTestRing(t *testing.T, entries uint32) *Ring {
	t.Helper()
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	r, err := New(entries)
	if errors.Is(err, ErrUnavailable) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// guard is the user data of a timer queued by await: a test that waits for
// a completion that never comes fails instead of hanging.
const guard = 1 << 63

// await enters the ring until want completions other than the guard's have
// come, and returns them by user data.
func await(t *testing.T, r *Ring, want int) map[uint64]Completion {
	t.Helper()
	ts := &Timespec{Sec: 10}
	if err := r.Timeout(ts, guard); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]Completion{}
	for len(got) < want {
		if err := r.Enter(1); err != nil {
			t.Fatal(err)
		}
		r.Completions(func(c Completion) {
			if c.UserData == guard {
				t.Fatalf("after 10 s, %d of %d completions: %v", len(got), want, got)
			}
			if _, dup := got[c.UserData]; dup {
				t.Errorf("two completions for %d", c.UserData)
			}
			got[c.UserData] = c
		})
	}
	// The guard stays armed; cancel it so that it cannot fire in a later
	// await on this ring.
	if err := r.Cancel(guard, guard+1); err != nil {
		t.Fatal(err)
	}
	for seen := 0; seen < 2; {
		if err := r.Enter(1); err != nil {
			t.Fatal(err)
		}
		r.Completions(func(c Completion) {
			if c.UserData == guard || c.UserData == guard+1 {
				seen++
				return
			}
			t.Errorf("unexpected completion %+v", c)
		})
	}
	return got
}

// listen is a listening socket on loopback, made without Go's netpoller so
// that only the ring waits on it.
func listen(t *testing.T) (fd int, addr string) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
}

// accepted is a connection accepted through the ring from a client dialled
// by the test.
func accepted(t *testing.T, r *Ring) (fd int, client net.Conn) {
	t.Helper()
	lfd, addr := listen(t)
	if err := r.Accept(lfd, 1); err != nil {
		t.Fatal(err)
	}
	// Submitted before the dial, so the accept is in flight when the
	// connection arrives.
	if err := r.Enter(0); err != nil {
		t.Fatal(err)
	}
	client, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	c := await(t, r, 1)[1]
	if c.Err() != nil {
		t.Fatalf("accept: %v", c.Err())
	}
	fd = int(c.Res)
	t.Cleanup(func() { syscall.Close(fd) })
	flags, err := fcntl(fd, syscall.F_GETFL)
	if err != nil || flags&syscall.O_NONBLOCK == 0 {
		t.Errorf("accepted socket flags %#x, %v: want O_NONBLOCK", flags, err)
	}
	return fd, client
}

func fcntl(fd, cmd int) (int, error) {
	v, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(v), nil
}

func TestEchoThroughTheRing(t *testing.T) {
	r := newTestRing(t, 8)
	fd, client := accepted(t, r)

	go client.Write([]byte("ping"))
	buf := make([]byte, 64)
	if err := r.Recv(fd, buf, 2, false); err != nil {
		t.Fatal(err)
	}
	c := await(t, r, 1)[2]
	if c.Res != 4 || string(buf[:4]) != "ping" {
		t.Fatalf("recv: %+v %q", c, buf[:max(0, c.Res)])
	}

	// A send linked to a receive: the receive is issued only once the
	// send has completed, so it may reuse the send's buffer.
	out := []byte("pong")
	if err := r.Send(fd, out, 3, true); err != nil {
		t.Fatal(err)
	}
	if err := r.Recv(fd, buf, 4, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Enter(0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "pong" {
		t.Fatalf("client read %q, %v", got, err)
	}
	client.Close()
	cs := await(t, r, 2)
	if cs[3].Res != 4 {
		t.Errorf("send: %+v", cs[3])
	}
	if cs[4].Res != 0 {
		t.Errorf("recv after the client closed: %+v, want 0 (end of stream)", cs[4])
	}
}

func TestFailedLinkCancelsTheRest(t *testing.T) {
	r := newTestRing(t, 8)
	fd, _ := accepted(t, r)
	if err := syscall.Shutdown(fd, syscall.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	// A send on a socket shut for writing fails (and raises no SIGPIPE);
	// the receive linked to it is cancelled, not run.
	if err := r.Send(fd, []byte("never"), 2, true); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if err := r.Recv(fd, buf, 3, false); err != nil {
		t.Fatal(err)
	}
	cs := await(t, r, 2)
	if !errors.Is(cs[2].Err(), syscall.EPIPE) {
		t.Errorf("send: %+v, want EPIPE", cs[2])
	}
	if !errors.Is(cs[3].Err(), syscall.ECANCELED) {
		t.Errorf("linked recv: %+v, want ECANCELED", cs[3])
	}
}

func TestTimeouts(t *testing.T) {
	r := newTestRing(t, 8)
	fd, _ := accepted(t, r)

	start := time.Now()
	if err := r.Timeout(&Timespec{Nsec: int64(20 * time.Millisecond)}, 2); err != nil {
		t.Fatal(err)
	}
	if c := await(t, r, 1)[2]; !errors.Is(c.Err(), syscall.ETIME) {
		t.Errorf("timeout: %+v, want ETIME", c)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("a 20 ms timeout completed after %v", d)
	}

	// A receive from a client that sends nothing, bounded by a linked
	// timeout: cancelled when the timeout fires.
	buf := make([]byte, 8)
	if err := r.Recv(fd, buf, 3, true); err != nil {
		t.Fatal(err)
	}
	if err := r.LinkTimeout(&Timespec{Nsec: int64(20 * time.Millisecond)}, 4); err != nil {
		t.Fatal(err)
	}
	cs := await(t, r, 2)
	if !errors.Is(cs[3].Err(), syscall.ECANCELED) || !errors.Is(cs[4].Err(), syscall.ETIME) {
		t.Errorf("recv %+v, link timeout %+v: want ECANCELED and ETIME", cs[3], cs[4])
	}
}

func TestCancel(t *testing.T) {
	r := newTestRing(t, 8)
	fd, _ := accepted(t, r)
	buf := make([]byte, 8)
	if err := r.Recv(fd, buf, 2, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Enter(0); err != nil {
		t.Fatal(err)
	}
	if err := r.Cancel(2, 3); err != nil {
		t.Fatal(err)
	}
	if err := r.Cancel(99, 4); err != nil {
		t.Fatal(err)
	}
	cs := await(t, r, 3)
	if !errors.Is(cs[2].Err(), syscall.ECANCELED) || cs[3].Res != 0 {
		t.Errorf("recv %+v, cancel %+v: want ECANCELED and 0", cs[2], cs[3])
	}
	if !errors.Is(cs[4].Err(), syscall.ENOENT) {
		t.Errorf("cancelling nothing: %+v, want ENOENT", cs[4])
	}
}

// More operations than the queue holds, and more completions than the
// completion queue holds: queuing submits a full queue, and the kernel
// keeps completions past the queue's size until they are reaped.
func TestMoreThanTheQueuesHold(t *testing.T) {
	r := newTestRing(t, 4)
	const n = 40
	ts := &Timespec{Nsec: 1}
	for i := range n {
		if err := r.Timeout(ts, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond) // every timer has fired
	cs := await(t, r, n)
	for i := range n {
		if c, ok := cs[uint64(i)]; !ok || !errors.Is(c.Err(), syscall.ETIME) {
			t.Errorf("timer %d: %+v, %v", i, c, ok)
		}
	}
}

func TestConnectAndRead(t *testing.T) {
	r := newTestRing(t, 8)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sa := NewSockaddr(netip.MustParseAddrPort(ln.Addr().String()))
	fd, err := syscall.Socket(sa.Family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := r.Connect(fd, sa, 2, true); err != nil {
		t.Fatal(err)
	}
	if err := r.LinkTimeout(&Timespec{Sec: 5}, 3); err != nil {
		t.Fatal(err)
	}
	cs := await(t, r, 2)
	if cs[2].Res != 0 || !errors.Is(cs[3].Err(), syscall.ECANCELED) {
		t.Fatalf("connect %+v, its timeout %+v: want 0 and ECANCELED", cs[2], cs[3])
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := syscall.Write(fd, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hi" {
		t.Fatalf("%q %v", got, err)
	}

	// Nothing listens on the port of a closed listener: refused.
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closed.Close()
	fd2, _ := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	defer syscall.Close(fd2)
	if err := r.Connect(fd2, NewSockaddr(netip.MustParseAddrPort(closed.Addr().String())), 4, false); err != nil {
		t.Fatal(err)
	}
	if c := await(t, r, 1)[4]; !errors.Is(c.Err(), syscall.ECONNREFUSED) {
		t.Errorf("connect to a closed port: %+v, want ECONNREFUSED", c)
	}

	// An eventfd read completes when another thread writes to it.
	efd, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	defer syscall.Close(int(efd))
	buf := make([]byte, 8)
	if err := r.Read(int(efd), buf, 5); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		syscall.Write(int(efd), []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}()
	if c := await(t, r, 1)[5]; c.Res != 8 || buf[0] != 1 {
		t.Errorf("eventfd read: %+v %v", c, buf)
	}
}

func TestSockaddr(t *testing.T) {
	sa := NewSockaddr(netip.MustParseAddrPort("[::1]:8080"))
	if sa.Family != syscall.AF_INET6 || sa.raw[2] != 0x1f || sa.raw[3] != 0x90 || sa.raw[8+15] != 1 {
		t.Errorf("[::1]:8080: %+v", sa)
	}
	sa = NewSockaddr(netip.MustParseAddrPort("10.1.2.3:443"))
	if sa.Family != syscall.AF_INET || sa.raw[2] != 1 || sa.raw[3] != 0xbb || sa.raw[4] != 10 || sa.raw[7] != 3 {
		t.Errorf("10.1.2.3:443: %+v", sa)
	}
}

// A link and the operation after it go to the kernel in one submission,
// however full the queue: cut apart, the link would run alone and its
// follower unbound (a LinkTimeout alone fails with EINVAL).
func TestLinksAreNeverCut(t *testing.T) {
	r := newTestRing(t, 4)
	fd, _ := accepted(t, r)
	ts := &Timespec{Nsec: 1}
	for i := range 3 {
		if err := r.Timeout(ts, uint64(10+i)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 8)
	if err := r.Recv(fd, buf, 2, true); err != nil {
		t.Fatal(err)
	}
	if err := r.LinkTimeout(&Timespec{Nsec: int64(20 * time.Millisecond)}, 3); err != nil {
		t.Fatal(err)
	}
	cs := await(t, r, 5)
	if !errors.Is(cs[2].Err(), syscall.ECANCELED) || !errors.Is(cs[3].Err(), syscall.ETIME) {
		t.Errorf("recv %+v, its link timeout %+v: want ECANCELED and ETIME", cs[2], cs[3])
	}
}
