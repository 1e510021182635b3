package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// The shim writes each container's stdout and stderr straight to its log file
// (containerd's file:// log URI, opened O_APPEND): no process per agent, and
// logs neither lost nor blocking while the node agent restarts. The driver
// keeps the files small: every LogCheckInterval, a file past LogMaxBytes has
// its last LogMaxBytes copied to container.log.1 and is truncated, so an
// agent's logs take at most about twice LogMaxBytes, plus what it writes in
// one interval. As with logrotate's copytruncate, lines written between the
// copy and the truncation (microseconds) can be lost.

// capLogsLoop runs until ctx ends.
func (d *Driver) capLogsLoop(ctx context.Context) {
	ticker := time.NewTicker(d.cfg.LogCheckInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if err := d.CapLogs(); err != nil {
			d.logger.Warn("capping agent logs", "error", err)
		}
	}
}

// CapLogs rotates every agent log file past LogMaxBytes.
func (d *Driver) CapLogs() error {
	paths, err := filepath.Glob(filepath.Join(d.cfg.DataDir, "agents", "*", "container.log"))
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range paths {
		if err := capLog(p, d.cfg.LogMaxBytes); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func capLog(path string, maxBytes int64) error {
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
