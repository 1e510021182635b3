package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agenthost/agenthost/nodeagent/driver/containerd/containerdtest"
)

// A Host is what a node agent would have a machine of its own for, made on
// this one (Options.ContainerdHosts): a network namespace, joined to the
// root namespace by a veth pair, where the node agent, a containerd of its
// own and its shims run; agents' containers get namespaces of their own
// from the node agent (CNI), as on any host. Two hosts share nothing a real
// pair of machines would not: their containerds, cgroups (namespaced by
// containerd namespace), iptables rules and agent subnets are their own, so
// one agent may run on both — the case the scenarios look for.
//
// Crash and Reboot are the machine's crash and reboot: every process gone at
// once, then the state a reboot clears (the namespace with its interfaces
// and rules, agents' network namespaces, containerd's runtime state, which
// lives on a tmpfs on a real host) gone, and the disks (containerd's root,
// the node agent's data directory) kept.
type Host struct {
	c     *Cluster
	Index int
	// NetNS is the host's network namespace; Addr its address, which the
	// servers and the proxy reach over the veth pair.
	NetNS string
	Addr  string
	veth  string
	// Dir holds containerd's root and state and the node agent's data; it
	// is short, as unix socket paths are limited to 108 bytes.
	Dir string
	// Namespace is the containerd namespace of the node's containers.
	Namespace  string
	containerd *Proc
	node       *Proc
}

// hostNetwork is the root namespace's side of the hosts: the servers'
// address on the loopback interface (the kernel has no dummy interfaces
// here), which hosts route to over their veths.
type hostNetwork struct {
	archive string // the test image every host imports
}

const (
	// hostsServerIP is the servers' cluster and gossip address when node
	// agents run on hosts; hostsPrefix the hosts' veth subnets
	// (hostsPrefix.<10+i>.0/24) and agentsPrefix their agents' subnets
	// (agentsPrefix.<i>.0/24, inside each host only).
	hostsServerIP = "10.216.0.1"
	hostsPrefix   = "10.216"
	agentsPrefix  = "10.217"
)

// run runs a command that must succeed.
func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// startHostNetwork gives the servers an address the hosts can reach and
// builds the test image; it returns the servers' address.
func (c *Cluster) startHostNetwork() string {
	c.t.Helper()
	containerdtest.Require(c.t)
	c.hostNet = &hostNetwork{}
	run(c.t, "ip", "addr", "add", hostsServerIP+"/32", "dev", "lo")
	c.hostNet.archive = filepath.Join(c.Dir, "test-image.tar")
	if err := containerdtest.BuildImage(context.Background(), c.hostNet.archive); err != nil {
		c.t.Fatal(err)
	}
	return hostsServerIP
}

func (c *Cluster) stopHostNetwork() {
	if c.hostNet != nil {
		exec.Command("ip", "addr", "del", hostsServerIP+"/32", "dev", "lo").Run()
		c.hostNet = nil
	}
}

// startHost makes node i's host and starts its containerd; the node agent
// is then started by the caller with nodeArgs.
func (c *Cluster) startHost(node *Proc, i int) *Host {
	c.t.Helper()
	dir, err := os.MkdirTemp("/tmp", "ahh-")
	if err != nil {
		c.t.Fatal(err)
	}
	pid := os.Getpid() % 1000000
	h := &Host{c: c, Index: i, NetNS: fmt.Sprintf("ah%dn%d", pid, i), veth: fmt.Sprintf("ah%dh%d", pid, i),
		Addr: fmt.Sprintf("%s.%d.2", hostsPrefix, 10+i), Dir: dir, Namespace: fmt.Sprintf("agenthost-%s", node.Name), node: node}
	c.Hosts = append(c.Hosts, h)
	node.netns = h.NetNS
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[debug]
  level = "warn"
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), h.stateDir(), h.socket(), h.socket()+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "containerd.toml"), []byte(config), 0o600); err != nil {
		c.t.Fatal(err)
	}
	h.containerd = &Proc{Name: node.Name + "-containerd", path: "containerd", netns: h.NetNS,
		args: []string{"--config", filepath.Join(dir, "containerd.toml")}, log: filepath.Join(c.Dir, node.Name+"-containerd.log")}
	h.up()
	return h
}

func (h *Host) socket() string   { return filepath.Join(h.Dir, "containerd.sock") }
func (h *Host) stateDir() string { return filepath.Join(h.Dir, "state") }
func (h *Host) dataDir() string  { return filepath.Join(h.Dir, "node") }

// up makes the host's namespace and link and starts its containerd: a
// machine booting.
func (h *Host) up() {
	t := h.c.t
	t.Helper()
	gw := fmt.Sprintf("%s.%d.1", hostsPrefix, 10+h.Index)
	run(t, "ip", "netns", "add", h.NetNS)
	run(t, "ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.NetNS)
	run(t, "ip", "addr", "add", gw+"/24", "dev", h.veth)
	run(t, "ip", "link", "set", h.veth, "up")
	run(t, "ip", "-n", h.NetNS, "addr", "add", h.Addr+"/24", "dev", "eth0")
	run(t, "ip", "-n", h.NetNS, "link", "set", "lo", "up")
	run(t, "ip", "-n", h.NetNS, "link", "set", "eth0", "up")
	run(t, "ip", "-n", h.NetNS, "route", "add", "default", "via", gw)
	h.containerd.start(t)
	waitFor(t, 20*time.Second, h.containerd.Name+" to answer", func() bool {
		return exec.Command("ctr", "--address", h.socket(), "version").Run() == nil
	})
}

// nodeArgs are the node agent's flags on this host.
func (h *Host) nodeArgs() []string {
	return []string{"--driver", "containerd", "--containerd-address", h.socket(), "--containerd-namespace", h.Namespace,
		"--advertise", h.Addr, "--data-dir", h.dataDir(),
		// The namespace is the host's own: fixed ports are free in it.
		"--gossip-bind", h.Addr + ":7403", "--runtime-service-bind", h.Addr + ":7404",
		"--subnet", fmt.Sprintf("%s.%d.0/24", agentsPrefix, h.Index),
		"--runtime-image", containerdtest.ImageName, "--import-image", h.c.hostNet.archive}
}

// Crash kills every process of the host at once with SIGKILL — the node
// agent, containerd, the shims and the agents' containers — as a machine's
// power loss would.
func (h *Host) Crash() {
	for range 50 {
		pids := h.processes()
		if len(pids) == 0 {
			break
		}
		// All of them in one pass, collected before any dies: a shim's
		// children are reparented when it goes.
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.node.wait(time.Minute)
	h.containerd.wait(time.Minute)
}

// processes lists the host's processes: those in its network namespace,
// their descendants (containers run in namespaces of their own under the
// shims) and whatever is left in its containers' cgroups.
func (h *Host) processes() []int {
	in := map[int]bool{}
	if out, err := exec.Command("ip", "netns", "pids", h.NetNS).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				in[pid] = true
			}
		}
	}
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		fields := strings.Fields(rest)
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		children[ppid] = append(children[ppid], pid)
	}
	var walk func(int)
	walk = func(pid int) {
		for _, c := range children[pid] {
			if !in[c] {
				in[c] = true
				walk(c)
			}
		}
	}
	for pid := range in {
		walk(pid)
	}
	// runc puts each container in /<containerd namespace>/<id>.
	procs, _ := exec.Command("sh", "-c", "cat /sys/fs/cgroup/"+h.Namespace+"/*/cgroup.procs 2>/dev/null").Output()
	for _, f := range strings.Fields(string(procs)) {
		if pid, err := strconv.Atoi(f); err == nil {
			in[pid] = true
		}
	}
	out := make([]int, 0, len(in))
	for pid := range in {
		out = append(out, pid)
	}
	return out
}

// Reboot brings a crashed host back: what a reboot clears is cleared (its
// network namespace with the agents' links and every iptables rule in it,
// the agents' network namespaces, containerd's runtime state), the disks are
// kept, and containerd and the node agent start again.
func (h *Host) Reboot() {
	h.c.t.Helper()
	h.clearVolatile()
	h.up()
	h.node.start(h.c.t)
}

// clearVolatile removes what does not outlive a machine's reboot.
func (h *Host) clearVolatile() {
	// The agents' network namespaces are bind mounts the node agent
	// recorded; containers' root file systems are mounted under the state
	// directory.
	records, _ := filepath.Glob(filepath.Join(h.dataDir(), "cni", "agents", "*.json"))
	for _, r := range records {
		var rec struct {
			NetNS string `json:"netns"`
		}
		if b, err := os.ReadFile(r); err == nil && json.Unmarshal(b, &rec) == nil && rec.NetNS != "" {
			exec.Command("umount", "-l", rec.NetNS).Run()
			os.Remove(rec.NetNS)
		}
	}
	exec.Command("sh", "-c", "grep "+h.Dir+" /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r umount -l").Run()
	exec.Command("ip", "netns", "del", h.NetNS).Run()
	os.RemoveAll(h.stateDir())
	os.Remove(h.socket())
	os.Remove(h.socket() + ".ttrpc")
	// Empty cgroups of dead containers would be gone too.
	exec.Command("sh", "-c", "rmdir /sys/fs/cgroup/"+h.Namespace+"/* /sys/fs/cgroup/"+h.Namespace+" 2>/dev/null").Run()
}

// destroy ends the host for good (the test's cleanup).
func (h *Host) destroy() {
	h.Crash()
	h.clearVolatile()
	os.RemoveAll(h.Dir)
}

// Tasks lists the agents whose containers run on the host now, with their
// tasks' PIDs (containerd's running tasks; a container's ID is its agent's).
func (h *Host) Tasks() (map[string]int, error) {
	out, err := exec.Command("ctr", "--address", h.socket(), "-n", h.Namespace, "tasks", "ls").Output()
	if err != nil {
		return nil, fmt.Errorf("ctr tasks ls on %s: %w", h.NetNS, err)
	}
	running := map[string]int{}
	for _, line := range strings.Split(string(out), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "RUNNING" {
			running[f[0]], _ = strconv.Atoi(f[1])
		}
	}
	return running, nil
}

// taskPIDs is every running task of every host: agent to host and PID.
func (c *Cluster) taskPIDs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, h := range c.Hosts {
		tasks, err := h.Tasks()
		if err != nil {
			t.Fatal(err)
		}
		for id, pid := range tasks {
			if other, ok := out[id]; ok {
				t.Fatalf("agent %s runs twice: %s and %s/%d", id, other, h.NetNS, pid)
			}
			out[id] = fmt.Sprintf("%s/%d", h.NetNS, pid)
		}
	}
	return out
}

// checkSameTasks fails the test unless the hosts run exactly the tasks
// want lists, with the same PIDs: nothing restarted, nothing added.
func checkSameTasks(t *testing.T, c *Cluster, want map[string]string) {
	t.Helper()
	got := c.taskPIDs(t)
	for id, task := range want {
		if got[id] != task {
			t.Errorf("agent %s: task %s before, %q now", id, task, got[id])
		}
	}
	for id, task := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("agent %s: task %s that was not running before", id, task)
		}
	}
}

// Containers lists the containers on the host, running or not.
func (h *Host) Containers() ([]string, error) {
	out, err := exec.Command("ctr", "--address", h.socket(), "-n", h.Namespace, "containers", "ls", "-q").Output()
	if err != nil {
		return nil, fmt.Errorf("ctr containers ls on %s: %w", h.NetNS, err)
	}
	return strings.Fields(string(out)), nil
}

// Cut takes the host's link down: nothing passes between it and the rest
// (servers, proxy, the other host) while its processes run on. Mend brings
// the link back.
func (h *Host) Cut() { run(h.c.t, "ip", "link", "set", h.veth, "down") }

// Mend undoes Cut.
func (h *Host) Mend() {
	t := h.c.t
	run(t, "ip", "link", "set", h.veth, "up")
	// The route through the link went with it; the host's side keeps its own.
	exec.Command("ip", "addr", "add", fmt.Sprintf("%s.%d.1/24", hostsPrefix, 10+h.Index), "dev", h.veth).Run()
}
