package driver

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// CapLogFile keeps an append-only log file small: past maxBytes, its last
// maxBytes are copied to path+".1" and the file is truncated. The writer must
// have opened it O_APPEND, so that its next write lands at the new end. As
// with logrotate's copytruncate, lines written between the copy and the
// truncation can be lost.
func CapLogFile(path string, maxBytes int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() <= maxBytes {
		return err
	}
	if _, err := f.Seek(st.Size()-maxBytes, io.SeekStart); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".container.log.*")
	if err != nil {
		return err
	}
	if _, err := io.CopyN(tmp, f, maxBytes); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("copy log tail: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path+".1"); err != nil {
		return err
	}
	// The shim appends (O_APPEND), so its next write lands at the new end.
	return f.Truncate(0)
}
