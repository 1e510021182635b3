package driver

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// The bounds of Logs: a caller may ask for up to MaxLogLines lines, and gets
// at most MaxLogBytes of them, so that a container printing one endless line
// costs the node no more than a megabyte per call.
const (
	MaxLogLines = 5000
	MaxLogBytes = 1 << 20
)

// Log is the tail of an agent's container output, oldest line first.
type Log struct {
	// Text is stdout and stderr as the container wrote them, interleaved;
	// not necessarily UTF-8.
	Text []byte
	// Truncated is true when the node keeps older output than Text: the
	// line count or the byte bound left it out.
	Truncated bool
}

// CheckAgentID refuses an agent ID that is not a plain directory name, as
// ErrNotFound: no container can have it, and it must never lead a path out
// of the agents' directory.
func CheckAgentID(agentID string) error {
	if agentID == "" || agentID == "." || agentID == ".." || filepath.Base(agentID) != agentID {
		return fmt.Errorf("%w: %q", ErrNotFound, agentID)
	}
	return nil
}

// AgentLogName is an agent's log file in its directory; the previous one,
// after CapLogFile, is AgentLogName+".1".
const AgentLogName = "container.log"

// TailAgentLog is both drivers' Logs: the tail of the log in the directory
// agentDir gives the agent; an ID that names no agent's directory is
// ErrNotFound.
func TailAgentLog(agentDir func(agentID string) string, agentID string, lines int) (Log, error) {
	if err := CheckAgentID(agentID); err != nil {
		return Log{}, err
	}
	dir := agentDir(agentID)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return Log{}, fmt.Errorf("%w: %s", ErrNotFound, agentID)
	}
	return TailLog(filepath.Join(dir, AgentLogName), lines, MaxLogBytes)
}

// TailLog returns the last lines of the log file at path, reading into the
// rotated path+".1" (CapLogFile) when the current file holds fewer lines,
// and reading at most maxBytes in all. A line cut by maxBytes is returned
// from where the cut falls (after any partial UTF-8 sequence), with
// Truncated set. Missing files are an empty log.
func TailLog(path string, lines int, maxBytes int64) (Log, error) {
	if lines < 1 || maxBytes < 1 {
		return Log{}, fmt.Errorf("tail of %d lines in %d bytes: both must be positive", lines, maxBytes)
	}
	buf, whole, err := readTail(path, maxBytes)
	if err != nil {
		return Log{}, err
	}
	older := false // output older than buf exists, though not for want of bytes
	if _, dropped := lastLines(buf, lines); whole && !dropped {
		// The current file holds too few lines: the rotated one goes
		// before it (it ends where the current file began, but for what
		// a rotation lost between its copy and its truncation).
		if room := maxBytes - int64(len(buf)); room > 0 {
			prev, prevWhole, err := readTail(path+".1", room)
			if err != nil {
				return Log{}, err
			}
			buf, whole = append(prev, buf...), prevWhole
		} else if st, err := os.Stat(path + ".1"); err == nil && st.Size() > 0 {
			older = true
		}
	}
	text, dropped := lastLines(buf, lines)
	if !dropped && !whole {
		// text begins where the byte bound cut.
		text = skipContinuationBytes(text)
	}
	return Log{Text: text, Truncated: dropped || !whole || older}, nil
}

// readTail reads the last maxBytes of the file at path; whole says it read
// from the file's start. A missing file reads as empty and whole. The file
// may shrink meanwhile (CapLogFile truncates it): what was read is kept.
func readTail(path string, maxBytes int64) (data []byte, whole bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	off := max(st.Size()-maxBytes, 0)
	data = make([]byte, st.Size()-off)
	n, err := f.ReadAt(data, off)
	if err != nil && err != io.EOF {
		return nil, false, fmt.Errorf("read %s: %w", path, err)
	}
	return data[:n], off == 0, nil
}

// lastLines returns the last n lines of buf, and whether earlier lines were
// left out. A final newline ends the last line; a last line without one
// counts too.
func lastLines(buf []byte, n int) (tail []byte, dropped bool) {
	i := len(buf)
	if i > 0 && buf[i-1] == '\n' {
		i--
	}
	for count := 0; i > 0; i-- {
		if buf[i-1] == '\n' {
			if count++; count == n {
				return buf[i:], true
			}
		}
	}
	return buf, false
}

// skipContinuationBytes drops the bytes of a UTF-8 sequence that a byte
// bound cut at its start (at most three).
func skipContinuationBytes(b []byte) []byte {
	for i := 0; i < 3 && len(b) > 0 && b[0]&0xC0 == 0x80; i++ {
		b = b[1:]
	}
	return b
}
