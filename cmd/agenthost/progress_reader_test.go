package main

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// slowReader hands out one byte at a time, a little apart.
type slowReader struct{ left int }

func (s *slowReader) Read(b []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	time.Sleep(2 * time.Millisecond)
	s.left--
	b[0] = 'x'
	return 1, nil
}

func TestProgressReaderReportsWhileReading(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	p := &progressReader{r: &slowReader{left: 100}}
	stop := p.report(logger, "importing image archive", 100, 20*time.Millisecond)
	n, err := io.Copy(io.Discard, p)
	stop()
	if err != nil || n != 100 || p.read.Load() != 100 {
		t.Fatalf("read %d, counted %d: %v", n, p.read.Load(), err)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], "importing image archive") || !strings.Contains(lines[0], "percent=") {
		t.Fatalf("progress lines: %q", logs.String())
	}
	// After stop, nothing more.
	before := logs.Len()
	time.Sleep(60 * time.Millisecond)
	if logs.Len() != before {
		t.Fatal("progress went on after stop")
	}
}
