// Package exemem keeps the read-only pages of the agenthost binary from
// counting against a long-running process that uses little of the binary.
//
// agenthost is one binary for every role, so the node agent maps a 45 MB
// executable of which it runs a small part. On kernels that cache files in
// large folios (ext4 and others since Linux 6.x), one touch of the text or
// read-only data maps a whole 2 MB folio with a PMD entry, and the node
// agent ends up with almost the entire binary resident. Those pages are clean
// and shared, but they are in the process's RSS, which is what operators see
// and what the node agent's memory budget is measured by.
package exemem

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Release turns off transparent huge pages for this process, so that later
// faults map only the pages around the one touched, then drops the current
// mappings of the executable's read-only segments. Dropped pages stay in the
// page cache and fault back in as they are used; nothing is written or lost,
// because read-only private mappings hold no modified pages. The writable data
// segment is left alone.
func Release() error {
	if err := unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("exemem: disable transparent huge pages: %w", err)
	}
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return fmt.Errorf("exemem: %w", err)
	}
	segments, err := readOnlySegments("/proc/self/smaps", exe)
	if err != nil {
		return err
	}
	for _, s := range segments {
		// Split the mapping into small VMAs so that no large folio fits in
		// one: since Linux 6.18 a fault maps a whole page-cache folio (up to
		// 2 MB) when it lies within the VMA, and only the fault-around window
		// (64 KB) otherwise. Alternate chunks carry VM_NOHUGEPAGE, which
		// changes nothing else because THP is already off for the process.
		for a := s.start; a < s.end; a += 2 * splitChunk {
			n := min(splitChunk, s.end-a)
			if _, _, errno := unix.Syscall(unix.SYS_MADVISE, a, n, unix.MADV_NOHUGEPAGE); errno != 0 {
				return fmt.Errorf("exemem: split %x-%x: %w", s.start, s.end, errno)
			}
		}
		// The raw call takes the addresses from /proc/self/maps as they are;
		// unix.Madvise would need them as a Go slice.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, s.start, s.end-s.start, unix.MADV_DONTNEED); errno != 0 {
			return fmt.Errorf("exemem: release %x-%x: %w", s.start, s.end, errno)
		}
	}
	return nil
}

const splitChunk = 64 << 10

type segment struct{ start, end uintptr }

// readOnlySegments lists the mappings of path that are read-only now and
// hold no private copy of any page. The second condition matters: the
// dynamic linker writes the GOT and then makes it read-only (RELRO), so a
// read-only mapping can hold modified pages, and dropping them would put the
// file's unrelocated bytes back. smaps counts such pages as Anonymous.
func readOnlySegments(smapsFile, path string) ([]segment, error) {
	f, err := os.Open(smapsFile)
	if err != nil {
		return nil, fmt.Errorf("exemem: %w", err)
	}
	defer f.Close()
	var (
		out     []segment
		cur     segment
		curOK   bool // the mapping being read is a candidate
		private bool // it holds a modified page
	)
	flush := func() {
		if curOK && !private {
			out = append(out, cur)
		}
		curOK, private = false, false
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if key, ok := strings.CutSuffix(fields[0], ":"); ok {
			// A per-mapping field such as "Anonymous:  4 kB".
			// Only Anonymous (and Swap, where anonymous pages go) tells
			// copied pages apart: Private_Dirty also counts page-cache
			// pages not yet written back, as in a binary just built.
			if (key == "Anonymous" || key == "Swap") && len(fields) > 1 && fields[1] != "0" {
				private = true
			}
			continue
		}
		// A mapping header:
		// 00400000-009ff000 r--p 00000000 fe:00 1234 /path/to/agenthost
		flush()
		if len(fields) < 6 || strings.Join(fields[5:], " ") != path {
			continue
		}
		if perms := fields[1]; len(perms) != 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("exemem: bad line in %s: %q", smapsFile, line)
		}
		cur, curOK = segment{uintptr(start), uintptr(end)}, true
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("exemem: %w", err)
	}
	return out, nil
}
