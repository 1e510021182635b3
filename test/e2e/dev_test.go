// Package e2e runs `agenthost dev` as a user would — the binary, a real
// containerd, the OpenCode runtime image and the offline model — and drives
// it through the REST API with the reference's own sequences.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agenthost/agenthost/nodeagent/driver/containerd/containerdtest"
)

// repoRoot is the module's root, from this package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// dev is a running `agenthost dev` and a client of its API.
type dev struct {
	t             *testing.T
	base          string // http://host:port/api/v1
	token         string
	operatorToken string
	dataDir       string
	proxyAddr     string // the embedded edge proxy
	check         func(method, path string, res *http.Response, body []byte)
}

// startDev builds the binary and the runtime image, starts a private
// containerd and `agenthost dev` on free ports, and waits for its node.
func startDev(t *testing.T, subnet, agentPorts string) *dev {
	t.Helper()
	containerdtest.Require(t)
	root := repoRoot(t)
	bin := filepath.Join(t.TempDir(), "agenthost")
	build := exec.Command("go", "build", "-o", bin, "./cmd/agenthost")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build agenthost: %v\n%s", err, out)
	}
	image := exec.Command("go", "run", "./deploy/runtime/build")
	image.Dir = root
	if out, err := image.CombinedOutput(); err != nil {
		t.Fatalf("build the runtime image: %v\n%s", err, out)
	}
	ctrd, err := containerdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctrd.Stop)
	// Once dev has stopped (its agents deleted, below), no port forwarding
	// rule of the dev subnet may be left in the nat table: a teardown cut
	// short leaks them, and a stale rule for a port hijacks that port for
	// whatever uses it next on the machine.
	t.Cleanup(func() {
		out, err := exec.Command("iptables", "-t", "nat", "-S").CombinedOutput()
		if err != nil {
			t.Errorf("iptables -t nat -S: %v\n%s", err, out)
			return
		}
		prefix := strings.TrimSuffix(strings.Split(subnet, "/")[0], ".0")
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "DNAT") && strings.Contains(line, prefix+".") {
				t.Errorf("a port forwarding rule outlived dev's agents: %s", line)
			}
		}
	})

	dataDir := filepath.Join(t.TempDir(), "dev")
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logPath := filepath.Join(t.TempDir(), "dev.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "dev",
		"--data-dir", dataDir,
		"--bind", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--http-addr", httpAddr,
		"--proxy-addr", proxyAddr,
		"--gossip-bind", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--node-gossip-bind", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--runtime-service-bind", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--offline-model", fmt.Sprintf(":%d", freePort(t)),
		"--containerd-address", ctrd.Address,
		"--subnet", subnet,
		"--agent-ports", agentPorts,
		"--runtime-archive", filepath.Join(root, "build", "runtime", "opencode-runtime.oci.tar"),
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("agenthost dev log:\n%s", tail(b, 200))
		}
	})

	d := &dev{t: t, base: "http://" + httpAddr + "/api/v1", dataDir: dataDir, proxyAddr: proxyAddr}
	deadline := time.Now().Add(60 * time.Second)
	for d.token == "" {
		if env, err := os.ReadFile(filepath.Join(dataDir, "tokens.env")); err == nil {
			vars := parseEnv(env)
			d.token, d.operatorToken = vars["AGENTHOST_TOKEN"], vars["AGENTHOST_OPERATOR_TOKEN"]
			if vars["AGENTHOST_ADDR"] != "http://"+httpAddr {
				t.Fatalf("tokens.env AGENTHOST_ADDR = %q, want http://%s", vars["AGENTHOST_ADDR"], httpAddr)
			}
		}
		select {
		case <-exited:
			t.Fatal("agenthost dev exited")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no tokens.env after 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fi, err := os.Stat(filepath.Join(dataDir, "tokens.env")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("tokens.env must be readable by its owner only: %v %v", fi.Mode(), err)
	}
	// The node registers and imports the image (seconds).
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var nodes struct {
			Nodes []struct {
				Status string `json:"status"`
			} `json:"nodes"`
		}
		if status := d.asOperator().call("GET", "/nodes", nil, &nodes); status == 200 && len(nodes.Nodes) == 1 && nodes.Nodes[0].Status == "ready" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dev node was not ready after 120 s")
		}
	}
	// Leave no container behind: delete every agent of every org (tests
	// make orgs of their own, by sign-up for one), with a token the
	// operator makes for each, then wait for the node to have removed them
	// (before containerd stops): a container left running keeps its
	// network, and its address and host port would be taken by the next
	// dev cluster on this machine that uses the same subnet.
	t.Cleanup(func() {
		var orgs struct {
			Orgs []struct {
				ID string `json:"id"`
			} `json:"orgs"`
		}
		d.asOperator().call("GET", "/orgs", nil, &orgs)
		for _, org := range orgs.Orgs {
			var tok struct {
				Token string `json:"token"`
			}
			if d.asOperator().call("POST", "/orgs/"+org.ID+"/tokens", map[string]string{"label": "e2e cleanup"}, &tok) != 201 {
				continue
			}
			as := *d
			as.token = tok.Token
			var list struct {
				Agents []struct {
					AgentID string `json:"agentId"`
				} `json:"agents"`
			}
			as.call("GET", "/agents?limit=1000", nil, &list)
			for _, a := range list.Agents {
				as.call("DELETE", "/agents/"+a.AgentID, nil, nil)
			}
		}
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			out, err := exec.Command("ctr", "--address", ctrd.Address, "-n", "agenthost", "containers", "ls", "-q").Output()
			if err == nil && strings.TrimSpace(string(out)) == "" {
				return
			}
		}
		t.Error("the node left containers behind after their agents were deleted")
	})
	return d
}

func tail(b []byte, lines int) string {
	all := strings.Split(string(b), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

func parseEnv(b []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = v
		}
	}
	return out
}

// asOperator is the same dev with the operator token.
func (d *dev) asOperator() *dev {
	op := *d
	op.token = d.operatorToken
	return &op
}

// call sends a JSON request and decodes the answer into out (when not nil),
// returning the status. Every answer is checked against the API document
// when d.check is set.
func (d *dev) call(method, path string, body any, out any) int {
	d.t.Helper()
	req := d.jsonRequest(method, d.base+path, body)
	req.Header.Set("Authorization", "Bearer "+d.token)
	return d.do(req, out)
}

// jsonRequest is a request to url with body, when not nil, as JSON.
func (d *dev) jsonRequest(method, url string, body any) *http.Request {
	d.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			d.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		d.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

func (d *dev) do(req *http.Request, out any) int {
	d.t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		d.t.Fatal(err)
	}
	if res.Header.Get("X-Request-Id") == "" {
		d.t.Errorf("%s %s: no X-Request-Id", req.Method, req.URL.Path)
	}
	if d.check != nil {
		d.check(req.Method, req.URL.Path, res, b)
	}
	if out != nil && res.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			d.t.Fatalf("%s %s: %d %s: %v", req.Method, req.URL.Path, res.StatusCode, b, err)
		}
	}
	if res.StatusCode >= 300 {
		d.t.Logf("%s %s → %d %s", req.Method, req.URL.Path, res.StatusCode, bytes.TrimSpace(b))
	}
	return res.StatusCode
}

// must is call that fails the test on any status other than want.
func (d *dev) must(want int, method, path string, body any, out any) {
	d.t.Helper()
	if got := d.call(method, path, body, out); got != want {
		d.t.Fatalf("%s %s: status %d, want %d", method, path, got, want)
	}
}

type agentStatus struct {
	AgentID  string `json:"agentId"`
	Name     string `json:"name"`
	Status   string `json:"status"`
	Busy     bool   `json:"busy"`
	URL      string `json:"url"`
	Sessions []struct {
		ID    string  `json:"id"`
		Title *string `json:"title"`
		URL   string  `json:"url"`
	} `json:"sessions"`
	ErrorMsg  *string `json:"errorMsg"`
	CreatedAt string  `json:"createdAt"`
	Autostart bool    `json:"autostart"`
}

// waitUntilIdle polls GET agent every 200 ms, as the reference's
// waitForAgent does every 2 s, until busy is false.
func (d *dev) waitUntilIdle(agentID string) agentStatus {
	d.t.Helper()
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var a agentStatus
		d.must(200, "GET", "/agents/"+agentID, nil, &a)
		if !a.Busy {
			return a
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("agent %s still busy after 120 s", agentID)
		}
	}
}

type messagesResponse struct {
	SessionID string            `json:"sessionId"`
	Messages  []json.RawMessage `json:"messages"`
	Usage     struct {
		Cost   float64 `json:"cost"`
		Tokens struct {
			Total int64 `json:"total"`
		} `json:"tokens"`
	} `json:"usage"`
}

// waitFor polls path until cond holds on the decoded answer.
func waitFor[T any](d *dev, path string, what string, cond func(T) bool) T {
	d.t.Helper()
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var v T
		if d.call("GET", path, nil, &v) == 200 && cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no %s after 90 s", what)
		}
	}
}

func (d *dev) upload(agentID, name string, content []byte) (int, []byte) {
	d.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", name)
	if err != nil {
		d.t.Fatal(err)
	}
	fw.Write(content)
	mw.Close()
	req, _ := http.NewRequest("POST", d.base+"/agents/"+agentID+"/files", &buf)
	req.Header.Set("Authorization", "Bearer "+d.token)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	var out json.RawMessage
	status := d.do(req, &out)
	return status, out
}

// withTimeout is a context for the test's own waits.
func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// throughProxy asks the dev proxy for path on the host of agentURL (the
// test cannot rely on *.localhost resolving, so it dials the proxy and
// names the host) and wants 200 with want in the body.
func (d *dev) throughProxy(agentURL, path, want string) {
	d.t.Helper()
	u, err := url.Parse(agentURL)
	if err != nil {
		d.t.Fatal(err)
	}
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		req, _ := http.NewRequest("GET", "http://"+d.proxyAddr+path, nil)
		req.Host = u.Host
		res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
		if res.StatusCode == 200 && strings.Contains(string(b), want) {
			return
		}
		last = fmt.Sprintf("%d %.300s", res.StatusCode, b)
	}
	d.t.Fatalf("GET %s%s through the proxy: %s", agentURL, path, last)
}
