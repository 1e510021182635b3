package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agenthost/agenthost/nodeagent/driver/process/processtest"
)

// The node agents' process driver runs this test binary as every agent's
// runtime (processtest.ServeStandInIfAsked), so no OpenCode and no
// containerd is needed.

var faults = flag.Bool("faults", false, "run the long fault scenarios (make test-faults)")

// raftTimeout, when set, is passed to every server as --raft-timeout, to
// measure failover with tuned timings (the servers' default is 1 s).
var raftTimeout = flag.Duration("raft-timeout", 0, "the servers' --raft-timeout (default: theirs)")

// binary is the agenthost binary every test starts, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	processtest.ServeStandInIfAsked()
	flag.Parse()
	dir, err := os.MkdirTemp("", "agenthost-cluster-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Servers of a Partitionable cluster run as users of their own.
	os.Chmod(dir, 0o755)
	binary = filepath.Join(dir, "agenthost")
	// A normal build, without -race: the processes are the system under
	// test, not the test code.
	build := exec.Command("go", "build", "-o", binary, "../../cmd/agenthost")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build agenthost: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Proc is one agenthost process of a cluster: a role, its flags and its log.
// Restart starts it again with the same flags, so with the same data
// directory and ports.
type Proc struct {
	Name string
	// HTTPAddr is a server's REST API and /v1/status, or the proxy's
	// listener; empty for node agents.
	HTTPAddr string
	// ClusterAddr is a server's Raft and internal RPC address.
	ClusterAddr string
	// DataDir is a server's data directory.
	DataDir string
	// GossipAddr is a server's gossip address (TCP and UDP).
	GossipAddr string
	// uid, when not 0, is the user the process runs as (Partition's rules
	// tell servers apart by it).
	uid int
	// path is the program, the agenthost binary when empty.
	path string
	// netns, when set, is the network namespace (of a Host) the process
	// runs in, entered with nsenter: only the network namespace, so that
	// the mounts it makes (agents' network namespaces, containers' root
	// file systems) are seen by the host's other processes.
	netns string
	args  []string
	log   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *Proc) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "=== %s: start %s\n", time.Now().UTC().Format(time.RFC3339Nano), strings.Join(p.args, " "))
	path, args := binary, p.args
	if p.path != "" {
		path = p.path
	}
	if p.netns != "" {
		// nsenter execs the program in place: the PID is the program's.
		args = append([]string{"--net=/var/run/netns/" + p.netns, "--", path}, args...)
		path = "nsenter"
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Pdeathsig: should this test process die, its cluster dies with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if p.uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(p.uid), Gid: uint32(p.uid)}
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", p.Name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		f.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// Running reports whether the process is up (it may be paused).
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the process this harness started, by its PID.
func (p *Proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(sig)
	}
}

// Kill9 kills the process with SIGKILL and waits until it is gone.
func (p *Proc) Kill9() {
	p.signal(syscall.SIGCONT) // a paused process dies as well, but say so
	p.signal(syscall.SIGKILL)
	p.wait(time.Minute)
}

// Stop sends SIGTERM and waits up to grace, then kills.
func (p *Proc) Stop(grace time.Duration) {
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGTERM)
	if !p.wait(grace) {
		p.Kill9()
	}
}

// Pause stops the process with SIGSTOP; Resume continues it.
func (p *Proc) Pause()  { p.signal(syscall.SIGSTOP) }
func (p *Proc) Resume() { p.signal(syscall.SIGCONT) }

func (p *Proc) wait(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Restart starts a process that is down again, with the same flags.
func (p *Proc) Restart(t *testing.T) {
	t.Helper()
	if p.Running() {
		p.Kill9()
	}
	p.start(t)
}

// Cluster is three control servers, two node agents and an edge proxy, all
// real processes on loopback.
type Cluster struct {
	t       *testing.T
	Dir     string
	Servers []*Proc
	Nodes   []*Proc
	Proxy   *Proc
	// Domain is the proxy's domain and the servers' public URL host.
	Domain string
	// OperatorToken is the cluster's first operator token.
	OperatorToken string
	HTTP          *http.Client
	mounts        []string // tmpfs data directories
	nftTable      string   // Partition's rules, when set
	// Hosts are the node agents' hosts (Options.ContainerdHosts), by node.
	Hosts   []*Host
	hostNet *hostNetwork
}

// handedOut holds every port freePort has returned in this test binary: the
// kernel may give a just-closed ephemeral port out again at once, and a port
// handed to two processes of one cluster fails its start (it did once in CI:
// two servers were given the same HTTP port).
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// freePort returns a loopback TCP port that was free a moment ago, and free
// for UDP too (gossip uses both), and that it has not returned before.
func freePort(t *testing.T) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			if handedOut.ports[port] {
				continue
			}
			handedOut.ports[port] = true
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func loopback(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

// StartCluster starts the cluster and returns once a leader is elected, the
// operator token is made, both nodes are ready and the proxy serves the API.
// t.Cleanup stops every process it started.
func StartCluster(t *testing.T) *Cluster {
	t.Helper()
	return StartClusterWith(t, Options{})
}

// Options vary the cluster StartClusterWith starts.
type Options struct {
	// ServerDiskMB, when not 0, puts each server's data directory on a
	// tmpfs of this size (it needs root), so that FillDisk can fill it.
	ServerDiskMB int
	// Partitionable runs each server as a user of its own (it needs root),
	// so that Partition's nftables rules can tell their packets apart on
	// loopback.
	Partitionable bool
	// ContainerdHosts runs each node agent with the containerd driver on a
	// Host of its own: a network namespace with a containerd of its own,
	// reached from the servers and the proxy over a veth pair (it needs
	// root, containerd, runc and the CNI plugins). Agents' runtimes are
	// containers of a small test image. KillHost and RebootHost then do to
	// a node what a machine's crash and reboot do.
	ContainerdHosts bool
	// RaftTimeout, when not 0, is the servers' --raft-timeout (the
	// -raft-timeout flag overrides it).
	RaftTimeout time.Duration
}

// StartClusterWith is StartCluster with options.
func StartClusterWith(t *testing.T, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Dir: t.TempDir(), Domain: "agents.test", HTTP: &http.Client{Timeout: 10 * time.Second}}
	// Servers' cluster and gossip addresses: on loopback, unless node
	// agents run in network namespaces of their own, which must reach them.
	serverIP := "127.0.0.1"
	if opts.ContainerdHosts {
		serverIP = c.startHostNetwork()
	}
	keyFile := filepath.Join(c.Dir, "secrets.key")
	if err := os.WriteFile(keyFile, []byte("k1:"+testKey()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stopAll)

	var clusterAddrs, apiAddrs []string
	for i := range 3 {
		s := &Proc{Name: fmt.Sprintf("s%d", i+1), ClusterAddr: net.JoinHostPort(serverIP, fmt.Sprint(freePort(t))), HTTPAddr: loopback(freePort(t))}
		clusterAddrs = append(clusterAddrs, s.ClusterAddr)
		apiAddrs = append(apiAddrs, s.HTTPAddr)
		c.Servers = append(c.Servers, s)
	}
	for i, s := range c.Servers {
		var others []string
		for j, a := range clusterAddrs {
			if j != i {
				others = append(others, a)
			}
		}
		s.DataDir = filepath.Join(c.Dir, s.Name)
		if opts.ServerDiskMB > 0 {
			c.mountTmpfs(s.DataDir, opts.ServerDiskMB)
		}
		s.GossipAddr = net.JoinHostPort(serverIP, fmt.Sprint(freePort(t)))
		serverKey := keyFile
		if opts.Partitionable {
			serverKey = c.runAsOwnUser(s, i, keyFile)
		}
		s.args = []string{"server", "--name", s.Name, "--data-dir", s.DataDir,
			"--bind", s.ClusterAddr, "--http-addr", s.HTTPAddr, "--gossip-bind", s.GossipAddr,
			"--bootstrap-expect", "3", "--join", strings.Join(others, ","),
			"--secrets-key-file", serverKey, "--public-url", "http://" + c.Domain}
		if timeout := cmp.Or(*raftTimeout, opts.RaftTimeout); timeout != 0 {
			s.args = append(s.args, "--raft-timeout", timeout.String())
		}
		s.log = filepath.Join(c.Dir, s.Name+".log")
		s.start(t)
	}
	c.WaitForLeader(30 * time.Second)

	res, err := c.Do(context.Background(), c.Servers[0].HTTPAddr, "POST", "/api/v1/operator/bootstrap", "", map[string]string{"label": "cluster-test"})
	if err != nil || res.Code != http.StatusCreated {
		t.Fatalf("bootstrap: %v %v", res, err)
	}
	var tok struct{ Token string }
	res.Decode(t, &tok)
	c.OperatorToken = tok.Token

	for i := range 2 {
		n := &Proc{Name: fmt.Sprintf("n%d", i+1)}
		n.args = []string{"node", "--name", n.Name, "--control", strings.Join(clusterAddrs, ","),
			"--cpu-millis", "100000", "--memory-mb", "200000", "--max-agents", "200"}
		if opts.ContainerdHosts {
			h := c.startHost(n, i)
			n.args = append(n.args, h.nodeArgs()...)
		} else {
			n.args = append(n.args, "--driver", "process", "--advertise", "127.0.0.1", "--data-dir", filepath.Join(c.Dir, n.Name),
				"--gossip-bind", loopback(freePort(t)), "--runtime-service-bind", loopback(freePort(t)),
				"--process-command", strings.Join(processtest.StandInCommand(t), " "))
		}
		n.log = filepath.Join(c.Dir, n.Name+".log")
		n.start(t)
		c.Nodes = append(c.Nodes, n)
	}
	c.Proxy = &Proc{Name: "proxy", HTTPAddr: loopback(freePort(t)), log: filepath.Join(c.Dir, "proxy.log")}
	c.Proxy.args = []string{"proxy", "--domain", c.Domain, "--control", strings.Join(clusterAddrs, ","),
		"--api", strings.Join(apiAddrs, ","), "--http-addr", c.Proxy.HTTPAddr, "--metrics-addr", "", "--access-log=false"}
	c.Proxy.start(t)

	// Generous: other packages' tests load the machine meanwhile.
	c.WaitForNodes(60 * time.Second)
	waitFor(t, 30*time.Second, "the proxy to serve the API", func() bool {
		res, err := c.Do(context.Background(), c.Proxy.HTTPAddr, "GET", "/api/v1/orgs", c.OperatorToken, nil)
		return err == nil && res.Code == http.StatusOK
	})
	return c
}

// testKey is a fixed 32-byte key, base64: the secrets key file's format.
func testKey() string { return "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" }

// stopAll stops every process: node agents with SIGTERM first (they stop
// their agents' processes on the way out), the rest with SIGKILL. On a
// failure it prints the tail of each log.
func (c *Cluster) stopAll() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Go(func() { n.Stop(5 * time.Second) })
	}
	wg.Wait()
	// Containers outlive their node agent by design: end each host's.
	for _, h := range c.Hosts {
		h.destroy()
	}
	c.stopHostNetwork()
	for _, p := range append(append([]*Proc{}, c.Servers...), c.Proxy) {
		if p != nil {
			p.Kill9()
		}
	}
	c.Heal()
	for _, dir := range c.mounts {
		// Lazily: a process the harness could not stop must not keep the
		// mount, nor fail the removal of the test's directory.
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			c.t.Errorf("unmount %s: %v: %s", dir, err, out)
		}
	}
	if c.t.Failed() {
		for _, p := range c.all() {
			b, _ := os.ReadFile(p.log)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			c.t.Logf("--- %s log (tail) ---\n%s", p.Name, b)
		}
	}
}

func (c *Cluster) all() []*Proc {
	ps := append(append([]*Proc{}, c.Servers...), c.Nodes...)
	if c.Proxy != nil {
		ps = append(ps, c.Proxy)
	}
	for _, h := range c.Hosts {
		ps = append(ps, h.containerd)
	}
	return ps
}

// Kill9 kills server i with SIGKILL.
func (c *Cluster) Kill9(i int) { c.Servers[i].Kill9() }

// Pause stops server i with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(i int)  { c.Servers[i].Pause() }
func (c *Cluster) Resume(i int) { c.Servers[i].Resume() }

// Restart starts server i again from its data directory, on its ports.
func (c *Cluster) Restart(i int) { c.Servers[i].Restart(c.t) }

// serverStatus is the part of GET /v1/status the harness reads.
type serverStatus struct {
	ServerID string `json:"serverId"`
	State    string `json:"state"`
	LeaderID string `json:"leaderId"`
	Term     uint64 `json:"term"`
}

// Status asks server i for its view of the cluster.
func (c *Cluster) Status(i int) (serverStatus, error) {
	var st serverStatus
	hc := &http.Client{Timeout: time.Second}
	res, err := hc.Get("http://" + c.Servers[i].HTTPAddr + "/v1/status")
	if err != nil {
		return st, err
	}
	defer res.Body.Close()
	err = json.NewDecoder(res.Body).Decode(&st)
	return st, err
}

// Leader returns the index of the server that says it leads and that the
// other running servers it reached agree on, or -1.
func (c *Cluster) Leader() int {
	leader, id := -1, ""
	for i, s := range c.Servers {
		if !s.Running() {
			continue
		}
		st, err := c.Status(i)
		if err != nil {
			continue
		}
		if st.State == "Leader" {
			if leader >= 0 {
				return -1 // two claim it (a deposed leader that has not noticed yet)
			}
			leader, id = i, st.ServerID
		}
	}
	if leader < 0 {
		return -1
	}
	for i, s := range c.Servers {
		if i == leader || !s.Running() {
			continue
		}
		if st, err := c.Status(i); err == nil && st.LeaderID != id {
			return -1
		}
	}
	return leader
}

// WaitForLeader waits until the running servers agree on a leader.
func (c *Cluster) WaitForLeader(d time.Duration) int {
	c.t.Helper()
	leader := -1
	waitFor(c.t, d, "a leader", func() bool {
		leader = c.Leader()
		return leader >= 0
	})
	return leader
}

// WaitForNodes waits until every node agent is registered and ready.
func (c *Cluster) WaitForNodes(d time.Duration) {
	c.t.Helper()
	waitFor(c.t, d, "the node agents to be ready", func() bool {
		ready := 0
		for _, status := range c.nodeStatuses() {
			if status == "ready" {
				ready++
			}
		}
		return ready >= len(c.Nodes)
	})
}

// nodeStatuses maps each registered node's name to its status ("ready",
// "down", …), lower-case; nil when no server answers.
func (c *Cluster) nodeStatuses() map[string]string {
	var out struct {
		Nodes []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
		} `json:"nodes"`
	}
	if err := c.Get(c.anyServer(), "/api/v1/nodes", c.OperatorToken, &out); err != nil {
		return nil
	}
	statuses := map[string]string{}
	for _, n := range out.Nodes {
		statuses[n.Name] = strings.ToLower(n.Status)
	}
	return statuses
}

// waitAllRunning waits until the org lists exactly n agents, all RUNNING,
// and returns them.
func (c *Cluster) waitAllRunning(org Org, n int, d time.Duration) []Agent {
	c.t.Helper()
	var running []Agent
	waitFor(c.t, d, fmt.Sprintf("%d agents RUNNING", n), func() bool {
		list, err := c.Agents(c.anyServer(), org)
		if err != nil || len(list) != n {
			return false
		}
		for _, a := range list {
			if a.Status != "RUNNING" {
				return false
			}
		}
		running = list
		return true
	})
	return running
}

// anyServer is the HTTP address of a running server.
func (c *Cluster) anyServer() string {
	for _, s := range c.Servers {
		if s.Running() {
			return s.HTTPAddr
		}
	}
	return c.Servers[0].HTTPAddr
}

// waitFor polls cond every 100 ms until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mountTmpfs mounts a tmpfs of sizeMB at dir; stopAll unmounts it once the
// processes are gone.
func (c *Cluster) mountTmpfs(dir string, sizeMB int) {
	c.t.Helper()
	if os.Geteuid() != 0 {
		c.t.Fatal("a tmpfs data directory needs root")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0700", sizeMB), "tmpfs", dir).CombinedOutput(); err != nil {
		c.t.Fatalf("mount a tmpfs at %s: %v: %s", dir, err, out)
	}
	c.mounts = append(c.mounts, dir)
}

// fillFile is the file FillDisk writes in a data directory.
const fillFile = "cluster-test-fill"

// FillDisk fills server i's data directory (a tmpfs: Options.ServerDiskMB)
// until no byte is left.
func (c *Cluster) FillDisk(i int) {
	c.t.Helper()
	f, err := os.OpenFile(filepath.Join(c.Servers[i].DataDir, fillFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				// Then byte by byte, so that not even a page is left.
				for {
					if _, err := f.Write(buf[:1]); err != nil {
						break
					}
				}
				var fs syscall.Statfs_t
				if err := syscall.Statfs(c.Servers[i].DataDir, &fs); err != nil || fs.Bavail != 0 {
					c.t.Fatalf("fill %s: %d blocks left (%v)", c.Servers[i].Name, fs.Bavail, err)
				}
				return
			}
			c.t.Fatalf("fill %s: %v", c.Servers[i].Name, err)
		}
	}
}

// FreeDisk gives server i's data directory its space back.
func (c *Cluster) FreeDisk(i int) {
	c.t.Helper()
	if err := os.Remove(filepath.Join(c.Servers[i].DataDir, fillFile)); err != nil {
		c.t.Fatal(err)
	}
}
