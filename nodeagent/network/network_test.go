package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gocni "github.com/containerd/go-cni"
	"github.com/containernetworking/plugins/pkg/ns"
)

// The tests' addresses, apart from every other suite's on this machine: the
// agents' subnet, and the link to a namespace that stands for the world
// outside the node.
var (
	testSubnet  = netip.MustParsePrefix("10.218.9.0/24")
	outsideNet  = netip.MustParsePrefix("10.218.10.0/24")
	outsideHost = netip.MustParseAddr("10.218.10.1") // the node's end: a node address
	outsidePeer = netip.MustParseAddr("10.218.10.2") // the other host
)

func requireNetwork(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"iptables-save", "iptables-restore", "ip", "/usr/lib/cni/ptp", "/usr/lib/cni/host-local"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "network tests need " + strings.Join(missing, ", ") + "; run `make setup` as root"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI must run these tests, not skip them)")
	}
	t.Skip(msg)
}

func newTestNetwork(t testing.TB) *Network {
	t.Helper()
	requireNetwork(t)
	removeLeftovers(t)
	cfg := DefaultConfig()
	cfg.Subnet = testSubnet
	cfg.StateDir = t.TempDir()
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("network: %v", err)
	}
	return n
}

// removeLeftovers deletes the namespaces that a killed earlier run left with
// addresses of the test subnet, and with them their veths and routes: a new
// run's agents get the same addresses, which the old routes would send to
// the old namespaces.
func removeLeftovers(t testing.TB) {
	t.Helper()
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		out, _ := exec.Command("ip", "-n", e.Name(), "-4", "-o", "addr").Output()
		for _, f := range strings.Fields(string(out)) {
			if p, err := netip.ParsePrefix(f); err == nil && testSubnet.Contains(p.Addr()) {
				t.Logf("removing namespace %s left by an earlier run", e.Name())
				exec.Command("ip", "netns", "del", e.Name()).Run()
				break
			}
		}
	}
}

// testAgent is an agent's network with a TCP server in it on runtimePort
// that answers every connection with the agent's id and the address the
// connection came from.
type testAgent struct {
	id        string
	hostPort  int
	address   string // containerIP:runtimePort
	netnsPath string
}

const runtimePort = 4096

// setUp wires an agent and starts its server; the test's end removes both.
// (Rules that a killed earlier run left for the same id are replaced by
// Setup itself.)
func setUp(t testing.TB, n *Network, id string, hostPort int) *testAgent {
	t.Helper()
	a, err := startAgent(t, n, id, hostPort)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// startAgent is setUp for goroutines other than the test's.
func startAgent(t testing.TB, n *Network, id string, hostPort int) (*testAgent, error) {
	path, address, err := n.Setup(context.Background(), id, hostPort, runtimePort)
	if err != nil {
		return nil, fmt.Errorf("set up %s: %w", id, err)
	}
	a := &testAgent{id: id, hostPort: hostPort, address: address, netnsPath: path}
	t.Cleanup(func() { a.tearDown(t, n) })
	var ln net.Listener
	err = ns.WithNetNSPath(path, func(ns.NetNS) error {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", runtimePort))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen in %s's namespace: %w", id, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s from %s\n", id, c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	return a, nil
}

func (a *testAgent) tearDown(t testing.TB, n *Network) {
	t.Helper()
	if a.netnsPath == "" {
		return
	}
	if err := n.Teardown(context.Background(), a.id, a.netnsPath, a.hostPort, runtimePort); err != nil {
		t.Errorf("tear down %s: %v", a.id, err)
	}
	a.netnsPath = ""
}

// ask connects to addr and returns the first line of the answer.
func ask(dial func(network, addr string) (net.Conn, error), addr string) (string, error) {
	c, err := dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// dialHost dials from the host's own namespace.
var dialHost = (&net.Dialer{Timeout: 3 * time.Second}).Dial

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// outside is a network namespace behind a veth standing for another host:
// it has a route to the node's end of the link and nothing else, so that it
// answers an agent only if the agent's connection arrives from the node's
// address.
type outside struct{ name string }

func startOutside(t testing.TB) *outside {
	t.Helper()
	name := fmt.Sprintf("ahnet%d", os.Getpid()%100000)
	o := &outside{name: name}
	o.stop() // what a killed earlier run of this pid left
	t.Cleanup(o.stop)
	for _, s := range [][]string{
		{"ip", "netns", "add", name},
		{"ip", "link", "add", name + "h", "type", "veth", "peer", "name", name + "c"},
		{"ip", "link", "set", name + "c", "netns", name},
		{"ip", "addr", "add", outsideHost.String() + "/24", "dev", name + "h"},
		{"ip", "link", "set", name + "h", "up"},
		{"ip", "-n", name, "addr", "add", outsidePeer.String() + "/24", "dev", name + "c"},
		{"ip", "-n", name, "link", "set", name + "c", "up"},
		{"ip", "-n", name, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", s, err, out)
		}
	}
	return o
}

func (o *outside) stop() {
	exec.Command("ip", "link", "del", o.name+"h").Run()
	exec.Command("ip", "netns", "del", o.name).Run()
}

// do runs fn in the outside namespace.
func (o *outside) do(fn func() error) error {
	return ns.WithNetNSPath("/var/run/netns/"+o.name, func(ns.NetNS) error { return fn() })
}

// dial dials from the outside namespace.
func (o *outside) dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := o.do(func() (err error) {
		c, err = (&net.Dialer{Timeout: 3 * time.Second}).Dial(network, addr)
		return err
	})
	return c, err
}

// inNetNS returns a dialer whose connections start in the namespace at path.
func inNetNS(path string) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.WithNetNSPath(path, func(ns.NetNS) (err error) {
			c, err = (&net.Dialer{Timeout: 3 * time.Second}).Dial(network, addr)
			return err
		})
		return c, err
	}
}

func TestHostPortReachesTheAgentFromElsewhereAndFromTheHost(t *testing.T) {
	n := newTestNetwork(t)
	o := startOutside(t)
	a := setUp(t, n, "nettest-hostport", freePort(t))
	want := fmt.Sprintf("%s from ", a.id)
	for _, c := range []struct {
		name string
		dial func(network, addr string) (net.Conn, error)
		addr netip.Addr
	}{
		// PREROUTING: another host dials the node's address.
		{"from another host", o.dial, outsideHost},
		// OUTPUT: the proxy or dev cluster on the node dials its advertise
		// address, or loopback.
		{"from the host to its address", dialHost, outsideHost},
		{"from the host to 127.0.0.1", dialHost, netip.MustParseAddr("127.0.0.1")},
	} {
		addr := netip.AddrPortFrom(c.addr, uint16(a.hostPort)).String()
		got, err := ask(c.dial, addr)
		if err != nil || !strings.HasPrefix(got, want) {
			t.Errorf("%s, %s: %q, %v; want the agent's answer", c.name, addr, got, err)
		}
	}
}

func TestAgentReachesOtherHostsFromTheNodesAddress(t *testing.T) {
	n := newTestNetwork(t)
	o := startOutside(t)
	var ln net.Listener
	if err := o.do(func() (err error) { ln, err = net.Listen("tcp", outsidePeer.String()+":0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "outside from %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	a := setUp(t, n, "nettest-outbound", freePort(t))
	got, err := ask(inNetNS(a.netnsPath), ln.Addr().String())
	if want := "outside from " + outsideHost.String(); err != nil || got != want {
		t.Fatalf("agent to %s: %q, %v; want %q (masqueraded to the node's address)", ln.Addr(), got, err, want)
	}
}

func TestTeardownLeavesNoForwardingBehind(t *testing.T) {
	n := newTestNetwork(t)
	port := freePort(t)
	first := setUp(t, n, "nettest-first", port)
	first.tearDown(t, n)
	if left, err := n.firewall.tagged(first.id); err != nil || len(left["filter"])+len(left["nat"]) > 0 {
		t.Fatalf("rules of a removed agent: %v, %v", left, err)
	}
	// A later agent on the same port gets its connections, not a leftover
	// DNAT to the first agent's address.
	second := setUp(t, n, "nettest-second", port)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if got, err := ask(dialHost, addr); err != nil || !strings.HasPrefix(got, second.id+" from ") {
		t.Fatalf("%s after the first agent's teardown: %q, %v; want the second agent's answer", addr, got, err)
	}
}

func TestSetupsOfDifferentAgentsRunConcurrently(t *testing.T) {
	n := newTestNetwork(t)
	// An agent whose set-up or teardown is under way and holds its lock
	// throughout the others' set-ups, which must not wait for it.
	unlock := n.locks.lock("nettest-busy")
	defer unlock()

	const agents = 6
	ids := make([]string, agents)
	for i := range ids {
		ids[i] = fmt.Sprintf("nettest-conc-%d", i)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		done = map[string]*testAgent{}
		took []time.Duration
	)
	for _, id := range ids {
		wg.Add(1)
		port := freePort(t)
		go func() {
			defer wg.Done()
			began := time.Now()
			a, err := startAgent(t, n, id, port)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			done[id], took = a, append(took, time.Since(began))
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(2 * time.Minute):
		t.Fatal("set-ups wait for another agent's")
	}
	if len(took) == 0 {
		t.FailNow() // every set-up failed, as reported
	}
	slices.Sort(took)
	t.Logf("%d concurrent set-ups: fastest %s, slowest %s", agents, took[0].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	for _, id := range ids {
		a := done[id]
		if a == nil {
			continue // its set-up failed the test
		}
		addr := fmt.Sprintf("127.0.0.1:%d", a.hostPort)
		if got, err := ask(dialHost, addr); err != nil || !strings.HasPrefix(got, id+" from ") {
			t.Errorf("%s: %q, %v; want %s's answer", addr, got, err, id)
		}
	}
	for _, a := range done {
		wg.Add(1)
		go func() { defer wg.Done(); a.tearDown(t, n) }()
	}
	wg.Wait()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if strings.Contains(string(out), tag(id)+`"`) || strings.Contains(string(out), tag(id)+" ") {
			t.Errorf("rules of %s remain after concurrent teardowns", id)
		}
	}
}

func TestSetupRemovesWhatAnInterruptedSetupLeft(t *testing.T) {
	n := newTestNetwork(t)
	port := freePort(t)
	// A node agent killed after wiring the agent: its network, rules and
	// record remain, and a new node agent on the same state sets it up again.
	left := setUp(t, n, "nettest-interrupted", port)
	leftPath := left.netnsPath
	again, err := New(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := setUp(t, again, left.id, port)
	left.netnsPath = "" // the second Setup's to remove, as checked here
	if _, err := os.Stat(leftPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the interrupted set-up's namespace %s remains (%v)", leftPath, err)
	}
	rules, err := again.firewall.tagged(a.id)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules["nat"]) != 1 || !strings.Contains(rules["nat"][0], a.address) {
		t.Errorf("host-port rules of the agent: %q; want one, to %s", rules["nat"], a.address)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if got, err := ask(dialHost, addr); err != nil || !strings.HasPrefix(got, a.id+" from ") {
		t.Errorf("%s: %q, %v; want the agent's answer", addr, got, err)
	}
}

func TestTeardownRemovesANetworkSetUpWithPortmap(t *testing.T) {
	n := newTestNetwork(t)
	const id = "nettest-legacy"
	port := freePort(t)
	// As a node agent before this one set it up: portmap and ipMasq, and a
	// record without ownNAT.
	path, _, err := n.Setup(context.Background(), id, port, runtimePort)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cni.Remove(context.Background(), id, path); err != nil {
		t.Fatal(err)
	}
	if err := n.firewall.release(id); err != nil {
		t.Fatal(err)
	}
	if _, err := n.legacy.Setup(context.Background(), id, path, gocni.WithCapabilityPortMap(portMap(port, runtimePort))); err != nil {
		t.Fatal(err)
	}
	// Should Teardown fail, no portmap rule outlives the test.
	t.Cleanup(func() {
		n.legacy.Remove(context.Background(), id, path, gocni.WithCapabilityPortMap(portMap(port, runtimePort)))
		n.Teardown(context.Background(), id, path, port, runtimePort)
	})
	if err := n.record(id, setupRecord{NetNS: path, HostPort: port, RuntimePort: runtimePort}); err != nil {
		t.Fatal(err)
	}
	cniRules := func() []string {
		out, err := exec.Command("iptables-save", "-t", "nat").Output()
		if err != nil {
			t.Fatal(err)
		}
		var found []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, `id: \"`+id+`\"`) {
				found = append(found, line)
			}
		}
		return found
	}
	if len(cniRules()) == 0 {
		t.Fatal("the legacy set-up made no portmap or ipMasq rules to remove")
	}
	if err := n.Teardown(context.Background(), id, path, port, runtimePort); err != nil {
		t.Fatal(err)
	}
	if left := cniRules(); len(left) > 0 {
		t.Errorf("portmap and ipMasq rules remain:\n%s", strings.Join(left, "\n"))
	}
}

func TestAgentCannotReachAnotherThroughItsHostPort(t *testing.T) {
	n := newTestNetwork(t)
	startOutside(t) // for a node address other than the agents' gateway
	target := setUp(t, n, "nettest-target", freePort(t))
	prober := setUp(t, n, "nettest-prober", freePort(t))
	// The host port's DNAT turns these into connections to the other
	// agent's address, which the isolation rules drop like a direct one.
	for _, host := range []netip.Addr{n.HostAddr(), outsideHost} {
		addr := netip.AddrPortFrom(host, uint16(target.hostPort)).String()
		if got, err := ask(inNetNS(prober.netnsPath), addr); err == nil {
			t.Errorf("an agent reached another through %s: %q", addr, got)
		}
	}
	if got, err := ask(inNetNS(prober.netnsPath), target.address); err == nil {
		t.Errorf("an agent reached another at %s: %q", target.address, got)
	}
}
