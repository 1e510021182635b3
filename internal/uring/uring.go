//go:build linux

// Package uring drives the kernel's io_uring interface for socket I/O: a
// submission queue the program writes operations to and a completion queue
// the kernel writes results to, both in memory shared with the kernel, so
// that one system call submits a whole batch of operations and collects
// whatever has completed. On a virtual machine every kernel entry is dear
// (on the machines agenthost is benchmarked on, a third of a forwarder's
// CPU time is the hypervisor's share of system calls); a forwarder that
// batches enters the kernel once per loop instead of four times per request
// (test/bench/proxy measures it).
//
// No Go module that does this is at hand, so the package speaks the ABI of
// include/uapi/linux/io_uring.h itself, and only the part a forwarder
// needs: accept, recv, send, timeouts, cancellation and linked operations.
//
// A Ring belongs to one goroutine, which should be locked to its OS thread
// (the ring is created with IORING_SETUP_SINGLE_ISSUER where the kernel has
// it: only the thread that created it may submit).
package uring

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// The kernel's io_uring ABI (include/uapi/linux/io_uring.h). The system
// call numbers are the same on every Linux architecture Go supports.
const (
	sysSetup = 425
	sysEnter = 426

	setupSubmitAll    = 1 << 7
	setupCoopTaskrun  = 1 << 8
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13

	enterGetEvents = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	featSingleMmap = 1 << 0
	featNoDrop     = 1 << 1

	opTimeout     = 11
	opConnect     = 16
	opRead        = 22
	opAccept      = 13
	opAsyncCancel = 14
	opLinkTimeout = 15
	opSend        = 26
	opRecv        = 27

	sqeIOLink = 1 << 2
)

// ErrUnavailable is wrapped by New's error when the kernel refuses
// io_uring: too old, disabled by the kernel.io_uring_disabled sysctl, or
// blocked by a seccomp profile (container engines' default ones block it).
var ErrUnavailable = errors.New("io_uring is unavailable")

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqRingOffsets
	cqOff                                                                  cqRingOffsets
}

type sqRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// sqe is a submission queue entry: 64 bytes.
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFDIn  int32
	addr3       uint64
	_           uint64
}

// Completion is the result of one operation: the user data it was
// submitted with, and its result — a count or a file descriptor, or a
// negated errno.
type Completion struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// Err is the completion's error, nil when Res is not negative.
func (c Completion) Err() error {
	if c.Res < 0 {
		return syscall.Errno(-c.Res)
	}
	return nil
}

// Timespec is the kernel's struct __kernel_timespec, for Timeout and
// LinkTimeout; the kernel reads it when the operation is submitted.
type Timespec struct {
	Sec, Nsec int64
}

// Ring is one io_uring instance. Operations are queued with its methods and
// handed to the kernel by Enter; nothing is submitted before. Buffers given
// to Recv and Send must stay reachable (and unchanged, for Send) until the
// operation's completion has been seen: the kernel reads and writes them
// after the call returns. (The Go heap does not move objects; stack
// memory must not be used.)
type Ring struct {
	fd      int
	mmaps   [][]byte
	sqHead  *uint32
	sqTail  *uint32
	sqMask  uint32
	sqArray []uint32
	sqes    []sqe
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    []Completion
	queued  uint32 // entries written since the last Enter

	// refs holds, per queue slot, the memory its last entry points to. It
	// keeps nothing alive for long (the slot is reused); it is there so
	// that memory handed to the kernel always escapes to the heap: a
	// buffer the compiler kept on a goroutine's stack would move when the
	// stack grows, under the kernel's feet.
	refs []unsafe.Pointer
}

// New sets up a ring with room for entries operations queued between two
// calls to Enter (a power of two; the completion queue is twice as big, and
// the kernel holds completions past that rather than drop them).
func New(entries uint32) (*Ring, error) {
	// The flags that make a single-threaded loop cheapest; the kernel
	// has had them all since 6.1, the oldest taken (with them, sends that
	// go on until all is sent, MSG_WAITALL, which Send promises).
	p := params{flags: setupSubmitAll | setupCoopTaskrun | setupSingleIssuer | setupDeferTaskrun}
	fd, _, errno := syscall.Syscall(sysSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	switch {
	case errno == syscall.ENOSYS || errno == syscall.EPERM:
		return nil, fmt.Errorf("%w: io_uring_setup: %v", ErrUnavailable, errno)
	case errno == syscall.EINVAL:
		return nil, fmt.Errorf("%w: the kernel is older than 6.1", ErrUnavailable)
	case errno != 0:
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &Ring{fd: int(fd)}
	if p.features&featSingleMmap == 0 || p.features&featNoDrop == 0 {
		r.Close()
		return nil, fmt.Errorf("%w: the kernel lacks IORING_FEAT_SINGLE_MMAP or IORING_FEAT_NODROP (5.5 and later have them)", ErrUnavailable)
	}
	ringSize := max(p.sqOff.array+p.sqEntries*4, p.cqOff.cqes+p.cqEntries*uint32(unsafe.Sizeof(Completion{})))
	rings, err := r.mmap(offSQRing, int(ringSize))
	if err != nil {
		return nil, err
	}
	sqes, err := r.mmap(offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})))
	if err != nil {
		return nil, err
	}
	u32 := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&rings[off])) }
	r.sqHead, r.sqTail, r.sqMask = u32(p.sqOff.head), u32(p.sqOff.tail), *u32(p.sqOff.ringMask)
	r.sqArray = unsafe.Slice(u32(p.sqOff.array), p.sqEntries)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&sqes[0])), p.sqEntries)
	r.cqHead, r.cqTail, r.cqMask = u32(p.cqOff.head), u32(p.cqOff.tail), *u32(p.cqOff.ringMask)
	r.cqes = unsafe.Slice((*Completion)(unsafe.Pointer(&rings[p.cqOff.cqes])), p.cqEntries)
	r.refs = make([]unsafe.Pointer, p.sqEntries)
	// The array maps queue slots to entries one to one, once for all.
	for i := range r.sqArray {
		r.sqArray[i] = uint32(i)
	}
	return r, nil
}

func (r *Ring) mmap(off int64, size int) ([]byte, error) {
	b, err := syscall.Mmap(r.fd, off, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("mmap io_uring: %w", err)
	}
	r.mmaps = append(r.mmaps, b)
	return b, nil
}

// Close releases the ring. Operations still in flight are cancelled by the
// kernel; their buffers must stay untouched until then, which Close does
// not wait for — close the sockets they use first.
func (r *Ring) Close() error {
	for _, b := range r.mmaps {
		syscall.Munmap(b)
	}
	r.mmaps = nil
	if r.fd < 0 {
		return nil
	}
	err := syscall.Close(r.fd)
	r.fd = -1
	return err
}

// ErrQueueFull is returned when an operation cannot be queued: the
// submission queue is full and the kernel takes no more until completions
// are reaped.
var ErrQueueFull = errors.New("io_uring submission queue full")

// next is a cleared entry at the queue's tail, for an operation on the
// memory at ref (or nil), with room for need entries from it on (2 for a
// linked operation: a link and what follows it must go to the kernel in
// one submission, or the chain is cut). A queue short of room is submitted
// first.
func (r *Ring) next(ref unsafe.Pointer, need uint32) (*sqe, error) {
	if r.pending()+need > uint32(len(r.sqes)) {
		if err := r.enter(0); err != nil {
			return nil, err
		}
		if r.pending()+need > uint32(len(r.sqes)) {
			return nil, ErrQueueFull
		}
	}
	slot := (*r.sqTail + r.queued) & r.sqMask
	r.refs[slot] = ref
	e := &r.sqes[slot]
	*e = sqe{}
	r.queued++
	return e, nil
}

func (r *Ring) queue(op uint8, fd int, addr unsafe.Pointer, n int, userData uint64, link bool) error {
	need := uint32(1)
	if link {
		need = 2
	}
	e, err := r.next(addr, need)
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.addr, e.len, e.userData = op, int32(fd), uint64(uintptr(addr)), uint32(n), userData
	if link {
		e.flags |= sqeIOLink
	}
	return nil
}

func bufAddr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// Accept queues an accept on a listening socket; the completion's Res is
// the new connection's descriptor, opened close-on-exec and non-blocking.
func (r *Ring) Accept(fd int, userData uint64) error {
	if err := r.queue(opAccept, fd, nil, 0, userData, false); err != nil {
		return err
	}
	r.sqes[(*r.sqTail+r.queued-1)&r.sqMask].opFlags = syscall.SOCK_CLOEXEC | syscall.SOCK_NONBLOCK
	return nil
}

// Recv queues a receive into buf; Res is the count read, 0 at the end of
// the stream. With link, the next operation queued starts only after this
// one has completed, and is cancelled (-ECANCELED) if this one fails; a
// short count or the end of the stream is not a failure.
func (r *Ring) Recv(fd int, buf []byte, userData uint64, link bool) error {
	return r.queue(opRecv, fd, bufAddr(buf), len(buf), userData, link)
}

// Send queues a send of all of buf (the kernel goes on until it is sent,
// or fails: a short count is a failure); Res is the count sent. link is
// as for Recv.
func (r *Ring) Send(fd int, buf []byte, userData uint64, link bool) error {
	if err := r.queue(opSend, fd, bufAddr(buf), len(buf), userData, link); err != nil {
		return err
	}
	r.sqes[(*r.sqTail+r.queued-1)&r.sqMask].opFlags = syscall.MSG_NOSIGNAL | syscall.MSG_WAITALL
	return nil
}

// Read queues a read into buf from any file (an eventfd, say); Res is the
// count read.
func (r *Ring) Read(fd int, buf []byte, userData uint64) error {
	return r.queue(opRead, fd, bufAddr(buf), len(buf), userData, false)
}

// Connect queues a connection of the socket fd to sa; Res is 0 once
// connected. The address is read when the operation is submitted. link is
// as for Recv: a LinkTimeout queued next bounds the connection's setup.
func (r *Ring) Connect(fd int, sa *Sockaddr, userData uint64, link bool) error {
	if err := r.queue(opConnect, fd, unsafe.Pointer(&sa.raw), 0, userData, link); err != nil {
		return err
	}
	r.sqes[(*r.sqTail+r.queued-1)&r.sqMask].off = uint64(sa.len)
	return nil
}

// Sockaddr is a socket address as the kernel takes it, for Connect.
type Sockaddr struct {
	raw [unsafe.Sizeof(syscall.RawSockaddrInet6{})]byte
	len uint32
	// Family is syscall.AF_INET or syscall.AF_INET6, for the socket.
	Family int
}

// NewSockaddr is ap's address for Connect.
func NewSockaddr(ap netip.AddrPort) *Sockaddr {
	sa := &Sockaddr{}
	port := ap.Port()
	if a := ap.Addr(); a.Is4() || a.Is4In6() {
		raw := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&sa.raw))
		raw.Family = syscall.AF_INET
		raw.Addr = a.Unmap().As4()
		sa.len, sa.Family = uint32(unsafe.Sizeof(*raw)), syscall.AF_INET
	} else {
		raw := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&sa.raw))
		raw.Family = syscall.AF_INET6
		raw.Addr = a.As16()
		sa.len, sa.Family = uint32(unsafe.Sizeof(*raw)), syscall.AF_INET6
	}
	// The port in network byte order, where both structures keep it.
	pp := (*[2]byte)(unsafe.Pointer(&sa.raw[2]))
	pp[0], pp[1] = byte(port>>8), byte(port)
	return sa
}

// Timeout queues a timer that completes with -ETIME after ts (relative).
func (r *Ring) Timeout(ts *Timespec, userData uint64) error {
	return r.queue(opTimeout, -1, unsafe.Pointer(ts), 1, userData, false)
}

// LinkTimeout bounds the operation queued just before it, which must have
// been queued with link: if it has not completed after ts, it is cancelled
// (completing with -ECANCELED) and this completes with -ETIME; otherwise
// this completes with -ECANCELED.
func (r *Ring) LinkTimeout(ts *Timespec, userData uint64) error {
	return r.queue(opLinkTimeout, -1, unsafe.Pointer(ts), 1, userData, false)
}

// Cancel queues the cancellation of the operation in flight that was
// submitted with target as its user data. The cancelled operation
// completes with -ECANCELED (or with its result, if it finished first);
// this completes with 0, -ENOENT (nothing to cancel) or -EALREADY.
func (r *Ring) Cancel(target, userData uint64) error {
	e, err := r.next(nil, 1)
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.addr, e.userData = opAsyncCancel, -1, target, userData
	return nil
}

// Enter submits every operation queued and waits until at least min
// completions are ready (0: none).
func (r *Ring) Enter(min uint32) error {
	return r.enter(min)
}

// pending is the count of entries queued or published but not yet taken
// by the kernel.
func (r *Ring) pending() uint32 {
	return *r.sqTail + r.queued - atomic.LoadUint32(r.sqHead)
}

func (r *Ring) enter(min uint32) error {
	atomic.StoreUint32(r.sqTail, *r.sqTail+r.queued)
	r.queued = 0
	var flags uintptr
	if min > 0 {
		flags = enterGetEvents
	}
	for {
		// Entries a refused call left in the queue go with this one.
		n := r.pending()
		_, _, errno := syscall.Syscall6(sysEnter, uintptr(r.fd), uintptr(n), uintptr(min), flags, 0, 0)
		switch errno {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		case syscall.EBUSY, syscall.EAGAIN:
			// Completions are held back: the caller reaps some and
			// calls again; what was not taken is taken then.
			return nil
		case syscall.EEXIST:
			return fmt.Errorf("io_uring_enter from a thread other than the ring's (lock the goroutine to its thread): %w", errno)
		default:
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
	}
}

// Completions calls f for each completion ready, oldest first, releasing
// each before f sees it (so that the kernel has room for more while f
// queues operations).
func (r *Ring) Completions(f func(Completion)) {
	head := *r.cqHead
	for tail := atomic.LoadUint32(r.cqTail); head != tail; {
		c := r.cqes[head&r.cqMask]
		head++
		atomic.StoreUint32(r.cqHead, head)
		f(c)
	}
}
