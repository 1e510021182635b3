package containerd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/containerd/containerd/runtime/v2/logging"
)

// The containerd shim hands a container's stdout and stderr to a logging
// binary of our choosing (binary:// log URI): this very executable, started
// with CONTAINER_ID and CONTAINER_NAMESPACE set and the arguments below. It
// lives as long as the container, independent of the node agent, so logs are
// neither lost nor blocking while the node agent restarts.

const loggerPathFlag = "agenthost-log-path"
const loggerMaxFlag = "agenthost-log-max-bytes"

// RunLoggerIfInvoked turns this process into a container's log writer and
// exits, when a containerd shim started it for that; otherwise it returns at
// once. main (and TestMain) call it first thing.
func RunLoggerIfInvoked() {
	if os.Getenv("CONTAINER_ID") == "" || os.Getenv("CONTAINER_NAMESPACE") == "" {
		return
	}
	fs := flag.NewFlagSet("agenthost-logger", flag.ContinueOnError)
	path := fs.String(loggerPathFlag, "", "log file")
	maxBytes := fs.Int64(loggerMaxFlag, 10<<20, "rotate past this size")
	if err := fs.Parse(os.Args[1:]); err != nil || *path == "" {
		return // not started as our logger
	}
	*maxBytes = max(*maxBytes, 4096)
	logging.Run(func(ctx context.Context, cfg *logging.Config, ready func() error) error {
		w := &cappedFile{path: *path, max: *maxBytes}
		defer w.Close()
		if err := ready(); err != nil {
			return err
		}
		var wg sync.WaitGroup
		for _, r := range []io.Reader{cfg.Stdout, cfg.Stderr} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(w, r)
			}()
		}
		wg.Wait()
		return nil
	})
}

// cappedFile appends to path and, past max bytes, moves it to path.1
// (replacing the previous one), so an agent's log never takes more than about
// twice max on disk.
type cappedFile struct {
	mu   sync.Mutex
	path string
	max  int64
	f    *os.File
	size int64
}

func (c *cappedFile) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil || c.size+int64(len(p)) > c.max {
		if err := c.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := c.f.Write(p)
	c.size += int64(n)
	return n, err
}

func (c *cappedFile) rotate() error {
	if c.f != nil {
		c.f.Close()
		c.f = nil
		if err := os.Rename(c.path, c.path+".1"); err != nil {
			return fmt.Errorf("rotate log: %w", err)
		}
	}
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	c.f, c.size = f, st.Size()
	if c.size >= c.max {
		return c.rotate()
	}
	return nil
}

func (c *cappedFile) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	return c.f.Close()
}
