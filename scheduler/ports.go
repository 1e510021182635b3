package scheduler

import "math/bits"

// PortSet tracks which ports of a range are held, as a bitmap. Finding a free
// port starts at a cursor that moves past allocated ports, so allocation is
// amortised O(1) until the range is nearly full.
type PortSet struct {
	start, end int // inclusive range
	words      []uint64
	used       int
	cursor     int // word index where the next search starts
}

// NewPortSet returns an empty set over [start, end].
func NewPortSet(start, end int) *PortSet {
	n := end - start + 1
	if n < 0 {
		n = 0
	}
	p := &PortSet{start: start, end: end, words: make([]uint64, (n+63)/64)}
	// Bits past the end of the range are marked held (and not counted), so
	// that a word is full exactly when all its real ports are held.
	if extra := len(p.words)*64 - n; extra > 0 {
		p.words[len(p.words)-1] |= ^uint64(0) << (64 - extra)
	}
	return p
}

// Size is the number of ports in the range.
func (p *PortSet) Size() int { return p.end - p.start + 1 }

// Free is the number of ports not held.
func (p *PortSet) Free() int { return p.Size() - p.used }

// InRange reports whether port lies in the set's range.
func (p *PortSet) InRange(port int) bool { return port >= p.start && port <= p.end }

// Held reports whether port is held. Ports outside the range are never held.
func (p *PortSet) Held(port int) bool {
	if !p.InRange(port) {
		return false
	}
	i := port - p.start
	return p.words[i/64]&(1<<(i%64)) != 0
}

// Hold marks port held; ports outside the range are ignored (an agent may keep
// a port from before the range changed).
func (p *PortSet) Hold(port int) {
	if !p.InRange(port) || p.Held(port) {
		return
	}
	i := port - p.start
	p.words[i/64] |= 1 << (i % 64)
	p.used++
	for k := 0; k < len(p.words) && p.words[p.cursor] == ^uint64(0); k++ {
		p.cursor = (p.cursor + 1) % len(p.words)
	}
}

// Release marks port free.
func (p *PortSet) Release(port int) {
	if !p.Held(port) {
		return
	}
	i := port - p.start
	p.words[i/64] &^= 1 << (i % 64)
	p.used--
	if i/64 < p.cursor {
		p.cursor = i / 64
	}
}

// next returns the first port, starting at word index from, that is neither
// held nor rejected by skip, scanning the whole range once; 0 when none.
func (p *PortSet) next(from int, skip func(port int) bool) int {
	n := len(p.words)
	for k := 0; k < n; k++ {
		w := (from + k) % n
		free := ^p.words[w]
		for free != 0 {
			b := bits.TrailingZeros64(free)
			free &^= 1 << b
			port := p.start + w*64 + b
			if skip == nil || !skip(port) {
				return port
			}
		}
	}
	return 0
}
