package driver

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeLogs writes the current log and, unless prev is nil, the rotated one.
func writeLogs(t *testing.T, cur, prev []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "container.log")
	if cur != nil {
		if err := os.WriteFile(path, cur, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if prev != nil {
		if err := os.WriteFile(path+".1", prev, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// numbered is lines from..to, each "line N\n".
func numbered(from, to int) []byte {
	var b bytes.Buffer
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.Bytes()
}

func TestTailLog(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, tc := range []struct {
		name      string
		cur, prev []byte // nil: no such file
		lines     int
		maxBytes  int64
		want      string
		truncated bool
	}{
		{name: "no files", lines: 10, maxBytes: 1 << 20, want: ""},
		{name: "empty file", cur: []byte{}, lines: 10, maxBytes: 1 << 20, want: ""},
		{name: "fewer lines than asked", cur: numbered(1, 3), lines: 10, maxBytes: 1 << 20, want: string(numbered(1, 3))},
		{name: "exactly the lines asked", cur: numbered(1, 3), lines: 3, maxBytes: 1 << 20, want: string(numbered(1, 3))},
		{name: "the last lines", cur: numbered(1, 10), lines: 3, maxBytes: 1 << 20, want: string(numbered(8, 10)), truncated: true},
		{name: "a last line without a newline counts", cur: []byte("a\nb\nc"), lines: 2, maxBytes: 1 << 20, want: "b\nc", truncated: true},
		{name: "empty lines count", cur: []byte("a\n\n\n"), lines: 2, maxBytes: 1 << 20, want: "\n\n", truncated: true},
		{name: "one line", cur: numbered(1, 5), lines: 1, maxBytes: 1 << 20, want: "line 5\n", truncated: true},

		// Rotation: the rotated file goes before the current one.
		{name: "rotated file fills up the lines", cur: numbered(6, 7), prev: numbered(1, 5), lines: 4, maxBytes: 1 << 20,
			want: string(numbered(4, 7)), truncated: true},
		{name: "rotated file read whole", cur: numbered(6, 7), prev: numbered(1, 5), lines: 50, maxBytes: 1 << 20,
			want: string(numbered(1, 7))},
		{name: "current file enough: rotated one unread", cur: numbered(6, 9), prev: numbered(1, 5), lines: 4, maxBytes: 1 << 20,
			want: string(numbered(6, 9)), truncated: true},
		{name: "only the rotated file (just truncated)", cur: []byte{}, prev: numbered(1, 5), lines: 2, maxBytes: 1 << 20,
			want: string(numbered(4, 5)), truncated: true},
		{name: "a line split across the rotation", cur: []byte("tail of a line\nnext\n"), prev: []byte("first\nhead of a "), lines: 2, maxBytes: 1 << 20,
			want: "head of a tail of a line\nnext\n", truncated: true},

		// Byte bounds.
		{name: "bound cuts a long line", cur: []byte("short\n" + long + "\n"), lines: 5, maxBytes: 11, want: "xxxxxxxxxx\n", truncated: true},
		{name: "bound cuts in the rotated file", cur: []byte("now\n"), prev: []byte("older\n" + long + "\n"), lines: 5, maxBytes: 10,
			want: "xxxxx\nnow\n", truncated: true},
		{name: "bound used up by the current file", cur: []byte("abcd\n"), prev: []byte("older\n"), lines: 5, maxBytes: 5,
			want: "abcd\n", truncated: true},
		{name: "bound cuts inside a UTF-8 sequence", cur: []byte("héllo\n"), lines: 1, maxBytes: 5, want: "llo\n", truncated: true},
		{name: "bound falls on a line's start", cur: numbered(1, 3), lines: 5, maxBytes: 14, want: "line 2\nline 3\n", truncated: true},
		{name: "bound cuts the first line returned", cur: numbered(1, 3), lines: 2, maxBytes: 10, want: " 2\nline 3\n", truncated: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeLogs(t, tc.cur, tc.prev)
			got, err := TailLog(path, tc.lines, tc.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if string(got.Text) != tc.want || got.Truncated != tc.truncated {
				t.Errorf("TailLog = %q, truncated %v; want %q, truncated %v", got.Text, got.Truncated, tc.want, tc.truncated)
			}
			if int64(len(got.Text)) > tc.maxBytes {
				t.Errorf("%d bytes, over the bound of %d", len(got.Text), tc.maxBytes)
			}
		})
	}
}

// TestTailLogBounds: a huge log returns at most MaxLogBytes and at most
// the lines asked for; bad arguments are refused.
func TestTailLogBounds(t *testing.T) {
	line := strings.Repeat("y", 999) + "\n"
	path := writeLogs(t, []byte(strings.Repeat(line, 3000)), []byte(strings.Repeat(line, 3000)))
	got, err := TailLog(path, MaxLogLines, MaxLogBytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Text) > MaxLogBytes || !got.Truncated {
		t.Fatalf("%d bytes, truncated %v: want at most %d, truncated", len(got.Text), got.Truncated, MaxLogBytes)
	}
	if n := bytes.Count(got.Text, []byte("\n")); n > MaxLogLines || n < MaxLogBytes/len(line)-1 {
		t.Fatalf("%d lines", n)
	}
	got, err = TailLog(path, 10, MaxLogBytes)
	if err != nil || len(got.Text) != 10*len(line) {
		t.Fatalf("10 lines: %d bytes, %v", len(got.Text), err)
	}
	for _, bad := range []struct {
		lines    int
		maxBytes int64
	}{{0, 10}, {-1, 10}, {1, 0}} {
		if _, err := TailLog(path, bad.lines, bad.maxBytes); err == nil {
			t.Errorf("TailLog(%d lines, %d bytes) did not fail", bad.lines, bad.maxBytes)
		}
	}
}

// TestTailLogAfterCap: what CapLogFile leaves (the rotated copy and an
// emptied file that the writer appends to again) reads as one log.
func TestTailLogAfterCap(t *testing.T) {
	path := writeLogs(t, numbered(1, 1000), nil)
	if err := CapLogFile(path, 4096); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(numbered(1001, 1002))
	f.Close()
	got, err := TailLog(path, 5, MaxLogBytes)
	if err != nil {
		t.Fatal(err)
	}
	if want := string(numbered(998, 1002)); string(got.Text) != want || !got.Truncated {
		t.Fatalf("after a rotation: %q, truncated %v; want %q", got.Text, got.Truncated, want)
	}
}

func TestCheckAgentID(t *testing.T) {
	for _, id := range []string{"", ".", "..", "../x", "a/b", "/abs"} {
		if err := CheckAgentID(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("CheckAgentID(%q) = %v, want ErrNotFound", id, err)
		}
	}
	if err := CheckAgentID("ag-123"); err != nil {
		t.Errorf("CheckAgentID(ag-123) = %v", err)
	}
}
