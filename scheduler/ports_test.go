package scheduler

import (
	"testing"
)

func TestPortSetHoldRelease(t *testing.T) {
	p := NewPortSet(10000, 10099)
	if p.Size() != 100 || p.Free() != 100 {
		t.Fatalf("new set: size %d free %d, want 100 and 100", p.Size(), p.Free())
	}

	p.Hold(10000)
	p.Hold(10042)
	p.Hold(10042) // twice counts once
	wantHeld(t, p, 10000, 10042)
	wantFree(t, p, 98)
	if p.Held(10001) {
		t.Errorf("Held(10001) = true for a port never held")
	}

	p.Release(10042)
	p.Release(10042) // twice counts once
	p.Release(10050) // never held: no-op
	wantHeld(t, p, 10000)
	wantFree(t, p, 99)
	if p.Held(10042) {
		t.Errorf("Held(10042) = true after Release")
	}
}

func TestPortSetIgnoresPortsOutsideRange(t *testing.T) {
	p := NewPortSet(10000, 10099)
	for _, port := range []int{0, 9999, 10100, 65535, -1} {
		if p.InRange(port) {
			t.Errorf("InRange(%d) = true", port)
		}
		p.Hold(port)
		if p.Held(port) {
			t.Errorf("Held(%d) = true for a port outside the range", port)
		}
		p.Release(port)
	}
	wantFree(t, p, 100)
	for _, port := range []int{10000, 10050, 10099} {
		if !p.InRange(port) {
			t.Errorf("InRange(%d) = false", port)
		}
	}
	// A padding bit of the last word (10100..10127 here) is not a port.
	p.Release(10100)
	wantFree(t, p, 100)
	if got := fillAll(t, p); len(got) != 100 {
		t.Errorf("after releasing a padding port, filled %d ports, want 100", len(got))
	}
}

func TestPortSetEmptyRange(t *testing.T) {
	p := NewPortSet(10000, 9999)
	if p.Size() != 0 || p.Free() != 0 {
		t.Fatalf("size %d free %d, want 0 and 0", p.Size(), p.Free())
	}
	p.Hold(10000)
	if got := p.next(0, nil); got != 0 {
		t.Errorf("next on an empty range = %d, want 0", got)
	}
}

// TestPortSetNextFillsRange allocates a whole range port by port, as the
// planner does (next from the cursor, then Hold), and checks that every port
// is returned exactly once and nothing past the end ever is, for ranges that
// are and are not multiples of 64.
func TestPortSetNextFillsRange(t *testing.T) {
	for _, tc := range []struct {
		name       string
		start, end int
	}{
		{"one port", 10000, 10000},
		{"63 ports", 10000, 10062},
		{"64 ports", 10000, 10063},
		{"65 ports", 10000, 10064},
		{"200 ports", 10000, 10199},
		{"default range", 10000, 59999},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPortSet(tc.start, tc.end)
			got := fillAll(t, p)
			if len(got) != tc.end-tc.start+1 {
				t.Errorf("filled %d ports, want %d", len(got), tc.end-tc.start+1)
			}
			wantFree(t, p, 0)
			if port := p.next(p.cursor, nil); port != 0 {
				t.Errorf("next on a full set = %d, want 0", port)
			}
		})
	}
}

// TestPortSetNextWithSkip finds every free port exactly once when the caller
// rejects the ones it has already taken without holding them, as a batch does.
func TestPortSetNextWithSkip(t *testing.T) {
	p := NewPortSet(10000, 10199)
	p.Hold(10003)
	p.Hold(10150)
	taken := map[int]bool{}
	for {
		port := p.next(p.cursor, func(port int) bool { return taken[port] })
		if port == 0 {
			break
		}
		if taken[port] || p.Held(port) || !p.InRange(port) {
			t.Fatalf("next returned %d: taken %v, held %v, in range %v", port, taken[port], p.Held(port), p.InRange(port))
		}
		taken[port] = true
	}
	if len(taken) != 198 {
		t.Errorf("found %d free ports, want 198", len(taken))
	}
	wantFree(t, p, 198) // next never holds
}

func TestPortSetCursor(t *testing.T) {
	p := NewPortSet(10000, 10255) // four words
	holdRange(p, 10000, 10063)
	if p.cursor != 1 {
		t.Fatalf("cursor after filling word 0 = %d, want 1", p.cursor)
	}
	holdRange(p, 10064, 10127)
	if p.cursor != 2 {
		t.Fatalf("cursor after filling words 0-1 = %d, want 2", p.cursor)
	}
	// Filling a word beyond the cursor does not move it.
	holdRange(p, 10192, 10255)
	if p.cursor != 2 {
		t.Fatalf("cursor after filling word 3 = %d, want 2", p.cursor)
	}

	p.Release(10070)
	if p.cursor != 1 {
		t.Fatalf("cursor after releasing a port of word 1 = %d, want 1", p.cursor)
	}
	if got := p.next(p.cursor, nil); got != 10070 {
		t.Fatalf("next after Release = %d, want 10070", got)
	}
	p.Hold(10070)
	if p.cursor != 2 {
		t.Fatalf("cursor after re-holding 10070 = %d, want 2 (past full words)", p.cursor)
	}

	// Fill word 2: every word is full, and the set says so.
	holdRange(p, 10128, 10191)
	wantFree(t, p, 0)
	if got := p.next(p.cursor, nil); got != 0 {
		t.Fatalf("next on a full set = %d, want 0", got)
	}
	// A release anywhere is found, whichever word the cursor rests on.
	p.Release(10255)
	if got := p.next(p.cursor, nil); got != 10255 {
		t.Fatalf("next after releasing the last port = %d, want 10255", got)
	}
	p.Release(10001)
	if p.cursor != 0 {
		t.Fatalf("cursor after releasing a port of word 0 = %d, want 0", p.cursor)
	}
	if got := p.next(p.cursor, nil); got != 10001 {
		t.Fatalf("next = %d, want 10001", got)
	}
}

// fillAll holds ports from next until the set is full and returns them,
// failing on a port returned twice or outside the range, and checking after
// each Hold that the cursor rests on a word with a free port while any is.
func fillAll(t *testing.T, p *PortSet) []int {
	t.Helper()
	seen := map[int]bool{}
	var got []int
	for {
		port := p.next(p.cursor, nil)
		if port == 0 {
			return got
		}
		if !p.InRange(port) {
			t.Fatalf("next returned %d, outside %d-%d", port, p.start, p.end)
		}
		if seen[port] {
			t.Fatalf("next returned %d twice", port)
		}
		seen[port] = true
		got = append(got, port)
		p.Hold(port)
		if p.Free() > 0 && p.words[p.cursor] == ^uint64(0) {
			t.Fatalf("cursor rests on full word %d with %d ports free", p.cursor, p.Free())
		}
		if len(got) > p.Size() {
			t.Fatalf("next returned more ports than the range holds")
		}
	}
}

func holdRange(p *PortSet, from, to int) {
	for port := from; port <= to; port++ {
		p.Hold(port)
	}
}

func wantHeld(t *testing.T, p *PortSet, ports ...int) {
	t.Helper()
	for _, port := range ports {
		if !p.Held(port) {
			t.Errorf("Held(%d) = false, want true", port)
		}
	}
}

func wantFree(t *testing.T, p *PortSet, free int) {
	t.Helper()
	if p.Free() != free {
		t.Errorf("Free() = %d, want %d", p.Free(), free)
	}
}
