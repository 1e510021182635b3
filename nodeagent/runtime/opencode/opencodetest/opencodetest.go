// Package opencodetest runs a real `opencode serve` for tests, configured
// like an agent's runtime and talking to agenthost's offline model.
//
// The binary is the pinned OpenCode that `make setup` installs (.bin/opencode
// at the module root), or AGENTHOST_OPENCODE_BIN. Without it a test skips,
// except under CI (CI=true), where it fails: these tests must run there.
package opencodetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/agenthost/agenthost/nodeagent/runtime/offlinemodel"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode"
)

// Binary finds the OpenCode binary, skipping or failing the test without it.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("AGENTHOST_OPENCODE_BIN"); p != "" {
		return p
	}
	if root, err := moduleRoot(); err == nil {
		p := filepath.Join(root, ".bin", "opencode")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("opencode"); err == nil {
		return p
	}
	msg := "OpenCode tests need the pinned opencode binary; run `make setup` (or set AGENTHOST_OPENCODE_BIN)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI must run these tests, not skip them)")
	}
	t.Skip(msg)
	return ""
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Server is a running `opencode serve` with its offline model.
type Server struct {
	URL       string
	Password  string
	Workspace string
	ConfigDir string
	Model     *offlinemodel.Server
	// ProviderKey is the API key OpenCode was given in cfg.Provider's
	// APIKeyEnv, when it names one.
	ProviderKey string
	cmd         *exec.Cmd
	logFile     string
}

// Start runs OpenCode configured with cfg (Model defaults to the offline
// model, which Start serves) and waits until it is healthy. It stops with
// the test.
func Start(t testing.TB, cfg opencode.AgentConfig) *Server {
	t.Helper()
	bin := Binary(t)
	model := offlinemodel.NewRecording(nil)
	ts := httptest.NewServer(model.Handler())
	t.Cleanup(ts.Close)
	if cfg.Model == "" {
		cfg.Model = opencode.OfflineModel
	}
	cfg.OfflineModelURL = ts.URL + "/v1"
	if cfg.Provider.Kind != "" && cfg.Provider.BaseURL == "" {
		// A declared provider with no server of its own is the offline
		// model under another name: as an operator's model server.
		cfg.Provider.BaseURL = ts.URL + "/v1"
	}

	dir := t.TempDir()
	s := &Server{
		Password:  randomHex(16),
		Workspace: filepath.Join(dir, "workspace"),
		ConfigDir: filepath.Join(dir, "config"),
		Model:     model,
		logFile:   filepath.Join(dir, "opencode.log"),
	}
	if err := os.MkdirAll(s.Workspace, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := opencode.WriteConfig(s.ConfigDir, s.ConfigDir, cfg); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	log, err := os.Create(s.logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	s.cmd = exec.Command(bin, "serve", "--hostname", "127.0.0.1", "--port", fmt.Sprint(port), "--print-logs", "--log-level", "WARN")
	s.cmd.Dir = s.Workspace
	s.cmd.Env = append(RuntimeEnv(filepath.Join(dir, "home"), s.ConfigDir),
		"OPENCODE_SERVER_PASSWORD="+s.Password, "PATH="+os.Getenv("PATH"))
	if cfg.Provider.APIKeyEnv != "" {
		s.ProviderKey = "key-" + randomHex(8)
		s.cmd.Env = append(s.cmd.Env, cfg.Provider.APIKeyEnv+"="+s.ProviderKey)
	}
	s.cmd.Stdout, s.cmd.Stderr = log, log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its tools' processes go with it
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	if err := s.waitHealthy(60 * time.Second); err != nil {
		t.Fatalf("opencode did not become healthy: %v\n%s", err, s.Log())
	}
	return s
}

// RuntimeEnv is opencode.RuntimeEnv with a home directory of its own.
func RuntimeEnv(home, configDir string) []string {
	return append(opencode.RuntimeEnv(configDir),
		"HOME="+home,
		"XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_STATE_HOME="+filepath.Join(home, ".local", "state"),
	)
}

// Log returns what OpenCode printed.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logFile)
	return string(b)
}

func (s *Server) waitHealthy(limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var last error
	// Each try has its own short timeout: the first request that reaches a
	// server still starting up can hang for good, while the next succeeds.
	client := &http.Client{Timeout: 2 * time.Second}
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/global/health", nil)
		req.SetBasicAuth(opencode.Username, s.Password)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		if s.cmd.ProcessState != nil {
			return fmt.Errorf("opencode exited")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return last
}

func (s *Server) stop() {
	if s.cmd.Process == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
