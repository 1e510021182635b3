package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/nodeagent/driver"
)

// The runtime stand-in is a real program: busybox's httpd serving a health
// file, started in the agent's workspace.
func newDriver(t *testing.T) *Driver {
	t.Helper()
	if _, err := exec.LookPath("busybox"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("busybox is needed (make setup installs busybox-static)")
		}
		t.Skip("busybox not installed")
	}
	www := t.TempDir()
	os.MkdirAll(filepath.Join(www, "global"), 0o755)
	os.WriteFile(filepath.Join(www, "global", "health"), []byte(`{"healthy":true}`), 0o644)
	d, err := New(Config{
		Command:     []string{"sh", "-c", "echo boot >> boots; echo booted on {port}; exec busybox httpd -f -p 127.0.0.1:{port} -h " + www},
		DataDir:     t.TempDir(),
		LogMaxBytes: 1 << 20,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/global/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never healthy: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProcessDriverLifecycle(t *testing.T) {
	d := newDriver(t)
	ctx := context.Background()
	spec := driver.AgentSpec{AgentID: "p1", HostPort: freePort(t)}
	c, err := d.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, c.Address)
	if st, err := d.Stats(ctx, "p1"); err != nil || st.MemoryBytes == 0 {
		t.Fatalf("stats %+v, %v", st, err)
	}

	// busybox httpd exits on SIGTERM.
	if err := d.Stop(ctx, "p1", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	list, _ := d.List(ctx)
	if len(list) != 1 || list[0].State != driver.StateStopped {
		t.Fatalf("after stop: %+v", list)
	}
	if _, err := d.Start(ctx, "p1", nil); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, c.Address)
	boots, _ := os.ReadFile(filepath.Join(d.workspace("p1"), "boots"))
	if strings.Count(string(boots), "boot") != 2 {
		t.Fatalf("workspace did not survive stop and start: %q", boots)
	}
	// Both starts' output is in the log, which Logs reads.
	booted := fmt.Sprintf("booted on %d\n", spec.HostPort)
	if log, err := d.Logs(ctx, "p1", 10); err != nil || string(log.Text) != booted+booted || log.Truncated {
		t.Fatalf("logs = %q (truncated %v), %v; want two boots", log.Text, log.Truncated, err)
	}
	if log, err := d.Logs(ctx, "p1", 1); err != nil || string(log.Text) != booted || !log.Truncated {
		t.Fatalf("last line = %q (truncated %v), %v", log.Text, log.Truncated, err)
	}
	if _, err := d.Logs(ctx, "nobody", 10); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("logs of an unknown agent: %v", err)
	}
	if err := d.Delete(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if list, _ := d.List(ctx); len(list) != 0 {
		t.Fatalf("after delete: %+v", list)
	}
	if _, err := os.Stat(d.agentDir("p1")); !os.IsNotExist(err) {
		t.Fatalf("agent directory survived delete")
	}
	if _, err := d.Logs(ctx, "p1", 10); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("logs of a deleted agent: %v", err)
	}
}

func TestProcessDriverNeedsAPortPlaceholder(t *testing.T) {
	_, err := New(Config{Command: []string{"opencode", "serve"}, DataDir: t.TempDir(), LogMaxBytes: 1 << 20, Logger: slog.Default()})
	if err == nil {
		t.Fatal("a command without {port} was accepted")
	}
}
