package containerd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/agenthost/agenthost/nodeagent/driver"
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
		if err := driver.CapLogFile(p, d.cfg.LogMaxBytes); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Logs reads the tail of the agent's log files (driver.TailAgentLog).
func (d *Driver) Logs(_ context.Context, agentID string, lines int) (driver.Log, error) {
	return driver.TailAgentLog(d.AgentDir, agentID, lines)
}
