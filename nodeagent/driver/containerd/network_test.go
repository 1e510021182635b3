package containerd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/network"
)

// outsideHost is a network namespace the test makes to stand for the world
// outside the node: 203.0.113.2 (TEST-NET-3) behind a veth, serving HTTP on 8080.
type outsideHost struct {
	name string
	cmd  *exec.Cmd
}

// get fetches path from addr inside the outside namespace, as another host
// (the proxy) would reach an agent's host port.
func (o *outsideHost) get(addr, path string) (string, error) {
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("ip", "netns", "exec", o.name, "busybox", "nc", "-w", "2", host, port)
	cmd.Stdin = strings.NewReader("GET " + path + " HTTP/1.0\r\n\r\n")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func startOutsideHost(t *testing.T) *outsideHost {
	t.Helper()
	out, err := exec.Command("ip", "-4", "addr").CombinedOutput()
	if err != nil || strings.Contains(string(out), "inet 203.0.113.") {
		t.Fatalf("the outside host's range 203.0.113.0/24 is in use on this machine (or ip failed: %v):\n%s", err, out)
	}
	name := fmt.Sprintf("ahout%d", os.Getpid()%100000)
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "index.html"), []byte("outside"), 0o644)
	steps := [][]string{
		{"ip", "netns", "add", name},
		{"ip", "link", "add", name + "h", "type", "veth", "peer", "name", name + "c"},
		{"ip", "link", "set", name + "c", "netns", name},
		{"ip", "addr", "add", "203.0.113.1/24", "dev", name + "h"},
		{"ip", "link", "set", name + "h", "up"},
		{"ip", "netns", "exec", name, "ip", "addr", "add", "203.0.113.2/24", "dev", name + "c"},
		{"ip", "netns", "exec", name, "ip", "link", "set", name + "c", "up"},
		{"ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", name, "ip", "route", "add", "default", "via", "203.0.113.1"},
		// The metadata address lives in this namespace too, so that a failed
		// isolation rule would reach our own test host, never the machine's
		// real network.
		{"ip", "netns", "exec", name, "ip", "addr", "add", "169.254.169.254/32", "dev", name + "c"},
		{"ip", "route", "add", "169.254.169.254/32", "via", "203.0.113.2"},
		// A stand-in for a control node on another host, which the node
		// agent is told to block.
		{"ip", "netns", "exec", name, "ip", "addr", "add", "198.51.100.7/32", "dev", name + "c"},
		{"ip", "route", "add", "198.51.100.7/32", "via", "203.0.113.2"},
	}
	o := &outsideHost{name: name}
	t.Cleanup(o.stop)
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", s, err, out)
		}
	}
	o.cmd = exec.Command("ip", "netns", "exec", name, "busybox", "httpd", "-f", "-p", "8080", "-h", www)
	if err := o.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *outsideHost) stop() {
	if o.cmd != nil && o.cmd.Process != nil {
		o.cmd.Process.Kill()
		o.cmd.Wait()
	}
	exec.Command("ip", "route", "del", "169.254.169.254/32", "via", "203.0.113.2").Run()
	exec.Command("ip", "route", "del", "198.51.100.7/32", "via", "203.0.113.2").Run()
	exec.Command("ip", "link", "del", o.name+"h").Run()
	exec.Command("ip", "netns", "del", o.name).Run()
}

func newNetwork(t *testing.T, blocked ...netip.Prefix) *network.Network {
	t.Helper()
	cfg := network.DefaultConfig()
	cfg.Subnet = netip.MustParsePrefix("10.213.7.0/24")
	cfg.StateDir = t.TempDir()
	cfg.Blocked = blocked
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := network.New(cfg)
	if err != nil {
		t.Fatalf("network: %v", err)
	}
	return n
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

func httpGet(url string) (string, error) {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestNetworkedAgentIsReachableOnItsPortAndIsolated(t *testing.T) {
	d := newDriver(t)
	outside := startOutsideHost(t)
	controlPlane := netip.MustParsePrefix("198.51.100.7/32")
	d.cfg.Network = newNetwork(t, controlPlane)
	ctx := context.Background()

	// Agent A serves the runtime's health endpoint on its runtime port.
	a := spec("agent-net-a", `exec httpd -f -p 4096 -h /www`)
	a.HostPort, a.RuntimePort = freePort(t), 4096
	ca, err := d.Create(ctx, a)
	if err != nil {
		t.Fatalf("create A: %v", err)
	}
	waitState(t, d, a.AgentID, driver.StateRunning)
	deadline := time.Now().Add(20 * time.Second)
	var body string
	for {
		body, err = httpGet("http://" + ca.Address + "/global/health")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || !strings.Contains(body, "healthy") {
		t.Fatalf("runtime at %s: %q, %v", ca.Address, body, err)
	}

	// From another host, the agent answers on its host port.
	viaHostPort := fmt.Sprintf("203.0.113.1:%d", a.HostPort)
	if body, err := outside.get(viaHostPort, "/global/health"); err != nil || !strings.Contains(body, "healthy") {
		t.Fatalf("runtime through host port %s: %q, %v", viaHostPort, body, err)
	}

	// A stand-in for the node agent's own port, on every host address.
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "node agent") }))
	hostPort := ln.Addr().(*net.TCPAddr).Port

	// Agent B probes what it must not reach, and the outside world it must.
	gateway := "10.213.7.1" // the host end of every ptp link (host-local's gateway)
	probes := []string{
		fmt.Sprintf("%s:%d", gateway, hostPort), // the node agent via the host
		fmt.Sprintf("203.0.113.1:%d", hostPort), // the node agent via another host address
		ca.Address,                              // another agent's container
		"169.254.169.254:8080",                  // a metadata service, answering in the outside namespace
		"198.51.100.7:8080",                     // a control node on another host (--block)
		"203.0.113.2:8080",                      // the outside world: must work
	}
	// busybox's static wget crashes without NSS libraries; nc is enough: a
	// target is open when it answers an HTTP request with anything at all.
	b := spec("agent-net-b", `for t in $PROBES; do if printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 ${t%:*} ${t##*:} 2>>/workspace/errors | grep -q .; then echo "$t open"; else echo "$t closed"; fi; done > /workspace/probe; echo probes-done >> /workspace/probe; exec sleep 1000`)
	b.Env = append(b.Env, "PROBES="+strings.Join(probes, " "))
	b.HostPort, b.RuntimePort = freePort(t), 4096
	if _, err := d.Create(ctx, b); err != nil {
		t.Fatalf("create B: %v", err)
	}
	result := waitFile(t, filepath.Join(d.WorkspaceDir(b.AgentID), "probe"), "probes-done")
	if errs, _ := os.ReadFile(filepath.Join(d.WorkspaceDir(b.AgentID), "errors")); len(errs) > 0 {
		t.Logf("probe errors:\n%s", errs)
	}
	for _, p := range probes[:5] {
		if !strings.Contains(result, p+" closed") {
			t.Errorf("agent reached %s; isolation failed:\n%s", p, result)
		}
	}
	if !strings.Contains(result, "203.0.113.2:8080 open") {
		t.Errorf("agent could not reach the outside host:\n%s", result)
	}

	// Deleting an agent removes its rules and namespace.
	if err := d.Delete(ctx, b.AgentID); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("iptables", "-S", "AGENTHOST-FORWARD").CombinedOutput()
	if strings.Contains(string(out), "agenthost:"+b.AgentID) {
		t.Fatalf("rules of deleted agent remain:\n%s", out)
	}
	// Nor its port forwarding (a DNAT tagged like its isolation rules).
	out, _ = exec.Command("iptables", "-t", "nat", "-S", "AGENTHOST-HOSTPORTS").CombinedOutput()
	if strings.Contains(string(out), "agenthost:"+b.AgentID) {
		t.Fatalf("port forwarding of deleted agent remains:\n%s", out)
	}
}
