package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
)

// These tests run the real binary, as an operator would, to check that the
// flags form a cluster and that a restarted server rejoins from its data
// directory.

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agenthost")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build agenthost: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type serverProcess struct {
	t        *testing.T
	bin      string
	args     []string
	httpAddr string
	cmd      *exec.Cmd
	log      *os.File
}

func (p *serverProcess) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start server: %v", err)
	}
}

// kill ends the process with SIGKILL, as a crash would.
func (p *serverProcess) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
		p.cmd = nil
	}
}

func (p *serverProcess) status() (store.Status, error) {
	var st store.Status
	resp, err := http.Get("http://" + p.httpAddr + "/v1/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func waitForStatus(t *testing.T, p *serverProcess, what string, ok func(store.Status) bool) store.Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last store.Status
	var lastErr error
	for time.Now().Before(deadline) {
		last, lastErr = p.status()
		if lastErr == nil && ok(last) {
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
	logs, _ := os.ReadFile(p.log.Name())
	t.Fatalf("server at %s: timed out waiting for %s; last status %+v, err %v\nlog:\n%s", p.httpAddr, what, last, lastErr, logs)
	return last
}

func TestServersFormClusterFromFlagsAndRejoinAfterKill(t *testing.T) {
	bin := buildBinary(t)
	const n = 3
	var clusterAddrs []string
	for range n {
		clusterAddrs = append(clusterAddrs, freeAddr(t))
	}
	procs := make([]*serverProcess, n)
	for i := range n {
		var join []string
		for j, a := range clusterAddrs {
			if j != i {
				join = append(join, a)
			}
		}
		logFile, err := os.Create(filepath.Join(t.TempDir(), "server.log"))
		if err != nil {
			t.Fatal(err)
		}
		httpAddr := freeAddr(t)
		procs[i] = &serverProcess{
			t: t, bin: bin, httpAddr: httpAddr, log: logFile,
			args: []string{"server",
				"--name", fmt.Sprintf("s%d", i),
				"--data-dir", t.TempDir(),
				"--bind", clusterAddrs[i],
				"--http-addr", httpAddr,
				"--bootstrap-expect", "3",
				"--gossip-bind", "127.0.0.1:0",
				"--join", strings.Join(join, ","),
			},
		}
		procs[i].start()
		t.Cleanup(procs[i].kill)
	}

	leaderID := ""
	for _, p := range procs {
		st := waitForStatus(t, p, "a leader and 3 voters", func(st store.Status) bool {
			return st.LeaderID != "" && len(st.Servers) == 3
		})
		if leaderID == "" {
			leaderID = st.LeaderID
		}
	}

	// Kill a follower, then start it again on the same data directory: it
	// must come back into the same cluster without any join flag doing work.
	victim := 0
	if st, _ := procs[0].status(); st.State == "Leader" {
		victim = 1
	}
	before, err := procs[victim].status()
	if err != nil {
		t.Fatal(err)
	}
	procs[victim].kill()
	procs[victim].start()
	st := waitForStatus(t, procs[victim], "rejoin as a follower", func(st store.Status) bool {
		return st.State == "Follower" && st.LeaderID != "" && st.CommitIndex >= before.CommitIndex
	})
	if len(st.Servers) != 3 || !st.HasState {
		t.Fatalf("restarted server sees %d servers (has state %v), want 3", len(st.Servers), st.HasState)
	}
	if st.ServerID != before.ServerID {
		t.Fatalf("restarted server has id %q, was %q", st.ServerID, before.ServerID)
	}
}

func TestServerRefusesDataDirOfAnotherServer(t *testing.T) {
	dir := t.TempDir()
	if _, err := serverID(dir, "alpha"); err != nil {
		t.Fatal(err)
	}
	if id, err := serverID(dir, "alpha"); err != nil || id != "alpha" {
		t.Fatalf("same name again: id %q, err %v", id, err)
	}
	if _, err := serverID(dir, "beta"); err == nil {
		t.Fatalf("a data dir of server alpha was accepted for beta")
	}
}

func TestServerRefusesRaftTimeoutOutOfRange(t *testing.T) {
	for _, d := range []string{"10ms", "1m"} {
		dir := t.TempDir()
		cmd := newRootCommand()
		cmd.SetArgs([]string{"server", "--data-dir", dir, "--raft-timeout", d, "--bind", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"})
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), "--raft-timeout") {
			t.Errorf("--raft-timeout %s: %v", d, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("--raft-timeout %s: the data directory was written before the flag was refused", d)
		}
	}
}
