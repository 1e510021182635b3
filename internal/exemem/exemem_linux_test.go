package exemem

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestReadOnlySegmentsSkipsWritableAndRelocatedMappings(t *testing.T) {
	const exe = "/usr/bin/agent host"
	smaps := strings.Join([]string{
		"00400000-009ff000 r--p 00000000 fe:00 12 /usr/bin/agent host",
		"Rss:                2300 kB",
		"Anonymous:             0 kB",
		// Dirty page cache of a binary just built: still droppable.
		"009ff000-01530000 r-xp 005ff000 fe:00 12 /usr/bin/agent host",
		"Private_Dirty:     11460 kB",
		"Anonymous:             0 kB",
		// RELRO: read-only now, but the dynamic linker wrote to it.
		"022d2000-022d3000 r--p 01ed2000 fe:00 12 /usr/bin/agent host",
		"Anonymous:             4 kB",
		"022d2000-022d3000 r--p 01ed2000 fe:00 12 /usr/bin/agent host",
		"Swap:                  4 kB",
		"022d3000-0236a000 rw-p 01ed3000 fe:00 12 /usr/bin/agent host",
		"Anonymous:             0 kB",
		"7f0000000000-7f0000001000 r--p 00000000 fe:00 99 /usr/lib/libc.so.6",
		"Anonymous:             0 kB",
		"7f0000002000-7f0000003000 r--s 00000000 fe:00 12 /usr/bin/agent host",
		"Anonymous:             0 kB",
	}, "\n") + "\n"
	path := filepath.Join(t.TempDir(), "smaps")
	if err := os.WriteFile(path, []byte(smaps), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readOnlySegments(path, exe)
	if err != nil {
		t.Fatal(err)
	}
	want := []segment{{0x400000, 0x9ff000}, {0x9ff000, 0x1530000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("segments = %x, want %x", got, want)
	}
}

func TestReadOnlySegmentsRejectsGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "smaps")
	if err := os.WriteFile(path, []byte("zz-00 r--p 0 fe:00 1 /x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readOnlySegments(path, "/x"); err == nil {
		t.Fatal("a malformed address range was accepted")
	}
}

// TestReleaseKeepsTheProcessWorking releases this test binary's pages (a cgo
// binary under -race, with a RELRO GOT that must survive) and then runs code
// that was never executed before, collects garbage and unwinds stacks.
func TestReleaseKeepsTheProcessWorking(t *testing.T) {
	before := readOnlyContents(t)
	if err := Release(); err != nil {
		t.Fatal(err)
	}
	if err := Release(); err != nil { // twice is harmless
		t.Fatal(err)
	}
	done := make(chan string)
	for i := 0; i < 8; i++ {
		go func() { done <- string(debug.Stack()) }()
	}
	for i := 0; i < 8; i++ {
		if s := <-done; !strings.Contains(s, "TestReleaseKeepsTheProcessWorking") {
			t.Fatalf("stack trace after release lost its symbols:\n%s", s)
		}
	}
	after := readOnlyContents(t)
	for addr, b := range before {
		if !bytes.Equal(b, after[addr]) {
			t.Fatalf("the read-only mapping at %x changed across Release: a relocated page was dropped", addr)
		}
	}
	runtime.GC()
	if _, err := os.ReadFile("/proc/self/status"); err != nil {
		t.Fatal(err)
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if m.NumGC == 0 {
		t.Fatal("no GC ran")
	}
}

// readOnlyContents reads every read-only mapping of the test binary,
// including those Release must leave alone, through /proc/self/mem.
func readOnlyContents(t *testing.T) map[uint64][]byte {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	out := map[uint64][]byte{}
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[5] != exe || f[1][1] != '-' {
			continue
		}
		var lo, hi uint64
		if _, err := fmt.Sscanf(f[0], "%x-%x", &lo, &hi); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, hi-lo)
		if _, err := mem.ReadAt(b, int64(lo)); err != nil {
			t.Fatalf("read %s: %v", f[0], err)
		}
		out[lo] = b
	}
	if len(out) == 0 {
		t.Fatal("found no read-only mapping of the test binary")
	}
	return out
}
