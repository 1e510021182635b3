// Command proxy measures the edge proxy with wrk on loopback, in one run:
// straight to a backend, through `agenthost proxy` (as it runs, on io_uring
// loops, and with a goroutine per connection), and through nginx
// configured the same way (host-based routing to the backend, the runtime
// credential added, X-Forwarded-* set, keep-alive to the backend); beside
// them three yardsticks, Go forwarders that parse nothing, built three
// ways. Each path's CPU time per request is measured with its rate.
//
// The proxy is the real binary with its routing table streamed from a real
// one-server control plane (in this process), where one agent is RUNNING on
// a node at 127.0.0.1 with the backend's port. Needs wrk and nginx (Debian
// packages; make bench installs them).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
	"github.com/agenthost/agenthost/test/bench/internal/benchcluster"
)

func main() {
	duration := flag.Duration("duration", 5*time.Second, "each wrk run at 64 connections (at 1 connection: half)")
	rounds := flag.Int("rounds", 3, "rounds over every path; each figure is the median of its rounds")
	hold := flag.Duration("hold", 0, "start every path, print their addresses and keep them up this long instead of measuring (to profile one under load)")
	floor := flag.String("floor-forwarder", "", "internal: run the floor forwarder on `listen,backend` addresses")
	eventLoop := flag.String("event-loop-forwarder", "", "internal: run the event-loop forwarder on `listen,backend` addresses")
	uring := flag.String("uring-forwarder", "", "internal: run the io_uring forwarder on `listen,backend` addresses")
	flag.Parse()
	if *floor != "" || *eventLoop != "" || *uring != "" {
		var err error
		if *floor != "" {
			listen, backend, _ := strings.Cut(*floor, ",")
			err = floorForwarder(listen, backend)
		} else if *eventLoop != "" {
			listen, backend, _ := strings.Cut(*eventLoop, ",")
			err = eventLoopForwarder(listen, backend, runtime.NumCPU())
		} else {
			listen, backend, _ := strings.Cut(*uring, ",")
			err = uringForwarder(listen, backend, runtime.NumCPU())
		}
		fmt.Fprintln(os.Stderr, "forwarder:", err)
		os.Exit(1)
	}
	if err := run(*duration, max(1, *rounds), *hold); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

const agentID = "agbenchbenchbenchbench"

func run(d time.Duration, rounds int, hold time.Duration) error {
	for _, tool := range []string{"wrk", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is needed (apt-get install wrk nginx-light; make bench does it)", tool)
		}
	}
	tmp, err := os.MkdirTemp("", "ahproxybench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// The backend: a small answer, as an agent's health or API call is.
	backendLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	backendPort := backendLn.Addr().(*net.TCPAddr).Port
	body := bytes.Repeat([]byte("x"), 128)
	go http.Serve(backendLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	}))

	control, stop, err := startControlPlane(tmp, backendPort)
	if err != nil {
		return err
	}
	defer stop()

	bin := filepath.Join(tmp, "agenthost")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/agenthost").CombinedOutput(); err != nil {
		return fmt.Errorf("build agenthost: %v\n%s", err, out)
	}
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	// The proxy as it runs (its fast path on io_uring loops, one per
	// core), and with a goroutine per connection instead.
	startProxy := func(name string, flags ...string) (addr string, pid int, log string, err error) {
		if addr, err = freeAddr(); err != nil {
			return "", 0, "", err
		}
		// No access log, as nginx below has none.
		cmd := exec.Command(bin, append([]string{"proxy", "--domain", "example.test", "--control", control.Addr(), "--api", "127.0.0.1:1",
			"--http-addr", addr, "--metrics-addr", "", "--access-log=false"}, flags...)...)
		log = filepath.Join(tmp, name+".log")
		out, _ := os.Create(log)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			return "", 0, "", err
		}
		stops = append(stops, func() { cmd.Process.Kill(); cmd.Wait() })
		return addr, cmd.Process.Pid, log, nil
	}
	proxyAddr, proxyPID, proxyLog, err := startProxy("proxy")
	if err != nil {
		return err
	}
	goProxyAddr, goProxyPID, goProxyLog, err := startProxy("proxy-goroutines", "--io-uring-loops=0")
	if err != nil {
		return err
	}

	nginxAddr, err := freeAddr()
	if err != nil {
		return err
	}
	nginxPID, stopNginx, err := startNginx(tmp, nginxAddr, backendPort)
	if err != nil {
		return err
	}
	defer stopNginx()

	// Three yardsticks, each in its own process like the others: the
	// least a Go forwarder can do per request (floorForwarder), the same
	// built as nginx is (eventLoopForwarder), and on io_uring
	// (uringForwarder).
	self, err := os.Executable()
	if err != nil {
		return err
	}
	startForwarder := func(flag string) (addr string, pid int, err error) {
		if addr, err = freeAddr(); err != nil {
			return "", 0, err
		}
		cmd := exec.Command(self, flag, addr+",127.0.0.1:"+strconv.Itoa(backendPort))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return "", 0, err
		}
		stops = append(stops, func() { cmd.Process.Kill(); cmd.Wait() })
		return addr, cmd.Process.Pid, nil
	}
	floorAddr, floorPID, err := startForwarder("-floor-forwarder")
	if err != nil {
		return err
	}
	loopAddr, loopPID, err := startForwarder("-event-loop-forwarder")
	if err != nil {
		return err
	}
	uringAddr, uringPID, err := startForwarder("-uring-forwarder")
	if err != nil {
		return err
	}

	host := fmt.Sprintf("a%d.example.test", backendPort)
	// pids are the processes whose CPU time a path costs beyond wrk's and
	// the backend's; for the direct path, this process, which runs the
	// backend (and an idle control plane).
	targets := []struct {
		name, url, host string
		pids            func() []int
	}{
		{"direct to the backend", "http://127.0.0.1:" + strconv.Itoa(backendPort) + "/", "", func() []int { return []int{os.Getpid()} }},
		{"agenthost proxy", "http://" + proxyAddr + "/", host, func() []int { return []int{proxyPID} }},
		{"agenthost proxy, goroutines", "http://" + goProxyAddr + "/", host, func() []int { return []int{goProxyPID} }},
		{"nginx, configured the same", "http://" + nginxAddr + "/", host, func() []int { return processTree(nginxPID) }},
		{"floor: bytes-only Go forwarder", "http://" + floorAddr + "/", host, func() []int { return []int{floorPID} }},
		{"event loop: floor as nginx is", "http://" + loopAddr + "/", host, func() []int { return []int{loopPID} }},
		{"io_uring: floor, batched calls", "http://" + uringAddr + "/", host, func() []int { return []int{uringPID} }},
	}
	const direct, proxied, nginx = 0, 1, 3 // rows of targets
	for _, t := range targets[1:] {
		if err := waitFor(t.url, t.host, body); err != nil {
			logs, _ := os.ReadFile(proxyLog)
			logs2, _ := os.ReadFile(goProxyLog)
			return fmt.Errorf("%s: %v\n%s%s", t.name, err, logs, logs2)
		}
	}
	if logs, _ := os.ReadFile(proxyLog); bytes.Contains(logs, []byte("fast path without io_uring")) {
		fmt.Printf("note: this kernel refuses io_uring; the proxy's first row is goroutines too\n%s\n", logs)
	}

	if hold > 0 {
		for _, t := range targets {
			fmt.Printf("%-30s %s Host: %s, pids %v\n", t.name, t.url, t.host, t.pids())
		}
		time.Sleep(hold)
		return nil
	}

	measure := func(url, host string, conns int, dur time.Duration, pids []int) (wrkResult, error) {
		args := []string{"-t", strconv.Itoa(min(conns, 2)), "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", max(1, int(dur.Seconds()))), "--latency"}
		if host != "" {
			args = append(args, "-H", "Host: "+host)
		}
		cpu0 := cpuTime(pids)
		out, err := exec.Command("wrk", append(args, url)...).CombinedOutput()
		if err != nil {
			return wrkResult{}, fmt.Errorf("wrk: %v\n%s", err, out)
		}
		cpu := cpuTime(pids) - cpu0
		r, err := parseWrk(string(out))
		// wrk's own count of requests is rps × its duration.
		r.cpu = cpu.Seconds() * 1e6 / (r.rps * float64(max(1, int(dur.Seconds()))))
		return r, err
	}
	fmt.Printf("edge proxy on loopback, wrk %s per run, %d rounds over the paths (medians), 128-byte answers, Host %s\n\n", d, rounds, host)
	fmt.Printf("%-30s %14s %10s %16s %14s\n", "path", "req/s (64 c)", "vs direct", "p50 at 1 conn", "CPU/req (64 c)")
	// Rounds over every path in turn, rather than one long run each: the
	// machine is shared, and its load drifts; a path measured while
	// another process was busy is outvoted by its other rounds, and each
	// ratio compares runs minutes apart at most.
	rps, p50, cpu := make([][]float64, len(targets)), make([][]float64, len(targets)), make([][]float64, len(targets))
	for range rounds {
		for i, t := range targets {
			r, err := measure(t.url, t.host, 64, d, t.pids())
			if err != nil {
				return err
			}
			s, err := measure(t.url, t.host, 1, d/2, nil)
			if err != nil {
				return err
			}
			rps[i], p50[i], cpu[i] = append(rps[i], r.rps), append(p50[i], s.p50), append(cpu[i], r.cpu)
		}
	}
	rows, single := make([]wrkResult, len(targets)), make([]wrkResult, len(targets))
	for i := range targets {
		rows[i].rps, rows[i].cpu, single[i].p50 = median(rps[i]), median(cpu[i]), median(p50[i])
	}
	for i, t := range targets {
		fmt.Printf("%-30s %14.0f %9.2fx %14.0fµs %12.1fµs\n", t.name, rows[i].rps, rows[i].rps/rows[direct].rps, single[i].p50, rows[i].cpu)
	}
	fmt.Printf("(CPU/req: user and system time of the forwarding process, or of nginx's master and workers; on the direct path, of the backend's process)\n")
	fmt.Printf("\nagenthost proxy: %.2fx direct (target ≥ 0.6x), %.2fx nginx (target ≥ 1.1x), adds %.0fµs at p50 with 1 connection (target ≤ 100µs)\n",
		rows[proxied].rps/rows[direct].rps, rows[proxied].rps/rows[nginx].rps, single[proxied].p50-single[direct].p50)
	for i := proxied + 1; i < len(targets); i++ {
		if i == nginx {
			continue
		}
		fmt.Printf("%s: %.2fx direct, %.2fx nginx, adds %.0fµs; agenthost proxy is %.2fx its requests/s\n",
			targets[i].name, rows[i].rps/rows[direct].rps, rows[i].rps/rows[nginx].rps, single[i].p50-single[direct].p50, rows[proxied].rps/rows[i].rps)
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

var (
	rpsLine = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	p50Line = regexp.MustCompile(`\s50%\s+([0-9.]+)(us|ms|s)`)
)

// wrkResult is one wrk run's requests/s and median latency (µs), and the
// CPU time (µs) per request of the processes watched during it.
type wrkResult struct{ rps, p50, cpu float64 }

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := rpsLine.FindStringSubmatch(out)
	p := p50Line.FindStringSubmatch(out)
	if m == nil || p == nil {
		return r, fmt.Errorf("cannot read wrk's output:\n%s", out)
	}
	if strings.Contains(out, "Non-2xx") {
		return r, fmt.Errorf("wrk saw errors:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	r.p50, _ = strconv.ParseFloat(p[1], 64)
	switch p[2] {
	case "ms":
		r.p50 *= 1000
	case "s":
		r.p50 *= 1e6
	}
	return r, nil
}

// startControlPlane runs a one-server cluster with one RUNNING agent on a
// node at 127.0.0.1, on the backend's port.
func startControlPlane(dir string, port int) (*clusterrpc.Server, func(), error) {
	// No node agent heartbeats here: the node must not be declared down.
	srv, stop, err := benchcluster.Start(dir, func(cfg *clusterrpc.ServerConfig) { cfg.NodeHeartbeatTTL = time.Hour })
	if err != nil {
		return nil, nil, err
	}
	ctx := context.Background()
	s := srv.Store
	cc, err := s.State().ClusterConfig()
	if err != nil {
		stop()
		return nil, nil, err
	}
	cc.PortRangeStart, cc.PortRangeEnd = port, port
	now := time.Now().UTC()
	for _, cmd := range []store.Command{
		&store.ClusterConfigSet{Config: cc},
		&store.OrgCreate{Org: store.Org{ID: "bench", Name: "bench", CreatedAt: now}},
		&store.NodeRegister{Node: store.Node{ID: "n1", Name: "n1", Address: "127.0.0.1",
			Capacity: store.NodeCapacity{CPUMillis: 1 << 20, MemoryMB: 1 << 20, MaxAgents: 10}, Runtimes: []string{"opencode"}, LastSeen: now}},
		&store.AgentCreate{Agent: clusterrpc.WithTestRuntimePassword(store.Agent{ID: agentID, OrgID: "bench", Name: "bench", Runtime: "opencode",
			Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: now}, "bench-password")},
		&store.AgentSetStatus{ID: agentID, FromNode: "n1", Status: store.StatusRunning},
	} {
		if _, err := s.Apply(ctx, cmd); err != nil {
			stop()
			return nil, nil, fmt.Errorf("%s: %w", cmd.CommandType(), err)
		}
	}
	return srv, stop, nil
}

// startNginx runs nginx as a reverse proxy doing what agenthost's proxy
// does for an agent host: match the host, add the credential and the
// forwarding headers, keep connections to the backend alive.
func startNginx(dir, addr string, backendPort int) (pid int, stop func(), err error) {
	conf := fmt.Sprintf(`worker_processes auto;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream agent { server 127.0.0.1:%[3]d; keepalive 128; }
  server {
    listen %[2]s;
    server_name ~^a%[3]d\.example\.test$;
    location / {
      proxy_pass http://agent;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header Authorization "Basic b3BlbmNvZGU6YmVuY2gtcGFzc3dvcmQ=";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_buffering off;
    }
  }
  server { listen %[2]s default_server; return 404; }
}
`, dir, addr, backendPort)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return 0, nil, err
	}
	cmd := exec.Command("nginx", "-c", path, "-p", dir)
	out, _ := os.Create(filepath.Join(dir, "nginx.out"))
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: killing the master alone would leave its
	// workers behind, still holding the port.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	return cmd.Process.Pid, func() {
		cmd.Process.Signal(syscall.SIGTERM) // the master stops its workers
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}, nil
}

func waitFor(url, host string, want []byte) error {
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && bytes.Equal(b.Bytes(), want) {
				return nil
			}
			last = fmt.Sprintf("%d %.200s", resp.StatusCode, b.String())
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("never answered: %s", last)
}

// cpuTime is the user and system time the processes have used so far,
// from /proc/PID/stat (all threads; counted in USER_HZ, 100 on Linux).
func cpuTime(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and
		// may hold spaces: state is field 3, utime 14, stime 15.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / 100
}

// processTree is pid and its children (nginx's master and its workers).
func processTree(pid int) []int {
	pids := []int{pid}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(b)) {
		if child, err := strconv.Atoi(f); err == nil {
			pids = append(pids, child)
		}
	}
	return pids
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
