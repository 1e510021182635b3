package load_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
)

// createsEnv sets the number of creates; `make test` runs the short
// version, `make test-faults` the 10,000.
const createsEnv = "AGENTHOST_LOAD_CREATES"

const (
	defaultCreates = 1000
	clients        = 64
)

// orgPlans are the ten orgs' caps: some bound by maxRunning, some by
// maxAgents, some by both. maxAgents is checked first, so an org whose two
// caps are equal is answered agent_limit.
var orgPlans = []store.Plan{
	{MaxRunning: 1},
	{MaxRunning: 2},
	{MaxAgents: 2},
	{MaxRunning: 3, MaxAgents: 5},
	{MaxRunning: 5, MaxAgents: 3},
	{MaxRunning: 4},
	{MaxAgents: 4},
	{MaxRunning: 2, MaxAgents: 2},
	{MaxRunning: 5},
	{MaxAgents: 5},
}

// admits is how many agents an org with this plan ends with when every
// create asks for a running agent and nothing is deleted: each admitted
// agent both exists and holds a running slot, so the smaller of the
// non-zero caps.
func admits(p store.Plan) int {
	caps := []int{}
	for _, c := range []int{p.MaxAgents, p.MaxRunning} {
		if c > 0 {
			caps = append(caps, c)
		}
	}
	return slices.Min(caps)
}

// answer is what one create got.
type answer struct {
	org     int
	status  int
	code    string // the error's code, for a refusal
	message string // the error's message
	agentID string
	took    time.Duration
}

// TestCreatesAdmitExactlyTheCapsAndLeakNothing sends N creates (1,000, or
// AGENTHOST_LOAD_CREATES) from 64 concurrent clients, round-robin over ten
// capped orgs and the three servers' REST APIs. The node offers exactly the
// sum of the orgs' caps, so every org can reach its cap and no more fits.
//
// Pass criteria:
//   - each org ends with exactly admits(plan) agents (the smaller of its
//     non-zero maxAgents and maxRunning), every one answered 200 and
//     RUNNING, with a process of the process driver behind it;
//   - every other create is answered 429 (agent_limit, running_cap) or 503
//     (running_cap, no_capacity, no_ports); no other status at all, so zero
//     other 5xx;
//   - once every agent is deleted, no agent holds a port (and each admitted
//     port can be bound again), the driver has no container, this process
//     has no child, and goroutines and open file descriptors are back to
//     the baseline taken before the load (after a warm-up burst, so that
//     the cluster's connection pools are already open), give or take a
//     small slack for the cluster's own background work.
//
// Latency bounds are liveness only (the API's 60 s create timeout).
func TestCreatesAdmitExactlyTheCapsAndLeakNothing(t *testing.T) {
	creates := defaultCreates
	if v := os.Getenv(createsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < len(orgPlans) {
			t.Fatalf("%s=%q: want a number of creates, at least %d", createsEnv, v, len(orgPlans))
		}
		creates = n
	}
	slots := 0
	for _, p := range orgPlans {
		slots += admits(p)
	}
	c := startCluster(t, slots)
	ctx := context.Background()
	tokens := make([]string, len(orgPlans))
	tokenOf := map[string]string{} // by org id
	for i, p := range orgPlans {
		orgID, token, err := c.leaderAPI().CreateOrg(ctx, fmt.Sprintf("load-%d", i), p, "load test")
		if err != nil {
			t.Fatal(err)
		}
		tokens[i], tokenOf[orgID] = token, token
	}
	transport := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	client := &http.Client{Transport: transport, Timeout: 2 * time.Minute}
	t.Cleanup(transport.CloseIdleConnections)

	// A warm-up burst from every client, refused but for one create, then
	// deleted: the baseline is that of a cluster that has served load (its
	// Raft pipelines and forwarding connections are open), so that what
	// remains afterwards is what the load left.
	warmID, warmToken, err := c.leaderAPI().CreateOrg(ctx, "warm-up", store.Plan{MaxAgents: 1}, "load test")
	if err != nil {
		t.Fatal(err)
	}
	tokenOf[warmID] = warmToken
	sendCreates(t, client, c.urls, []string{warmToken}, 2*clients, "warm-up")
	deleteAll(t, c, client, tokenOf)
	c.waitNoAgents(t)
	transport.CloseIdleConnections()
	time.Sleep(time.Second)

	base := c.resources()
	baseFDs := fdTargets(t)
	t.Logf("baseline: %s", base)

	// The load: request i is for org i%10 through API i%3.
	start := time.Now()
	answers := sendCreates(t, client, c.urls, tokens, creates, "agent")
	elapsed := time.Since(start)

	admitted := make([][]string, len(orgPlans))
	byAnswer := map[string]int{}
	var latencies, admittedLat, refusedLat []time.Duration
	for _, a := range answers {
		latencies = append(latencies, a.took)
		key := strconv.Itoa(a.status)
		switch {
		case a.status == http.StatusOK:
			admitted[a.org] = append(admitted[a.org], a.agentID)
			admittedLat = append(admittedLat, a.took)
		case a.status == http.StatusTooManyRequests && (a.code == "agent_limit" || a.code == "running_cap"),
			a.status == http.StatusServiceUnavailable && (a.code == "running_cap" || a.code == "no_capacity" || a.code == "no_ports"):
			key += " " + a.code
			refusedLat = append(refusedLat, a.took)
		default:
			key += " " + a.code
			t.Errorf("org %d: a create answered %d %s: %s", a.org, a.status, a.code, a.message)
		}
		byAnswer[key]++
	}
	total429, total503 := 0, 0
	for k, n := range byAnswer {
		switch k[:3] {
		case "429":
			total429 += n
		case "503":
			total503 += n
		}
	}
	nAdmitted := 0
	for _, ids := range admitted {
		nAdmitted += len(ids)
	}
	t.Logf("%d creates from %d clients in %s: %.0f requests/s; admitted %d, 429 %d, 503 %d; answers %v",
		creates, clients, elapsed.Round(time.Millisecond), float64(creates)/elapsed.Seconds(), nAdmitted, total429, total503, byAnswer)
	t.Logf("latency p50/p99: all %s/%s, admitted %s/%s, refused %s/%s",
		percentile(latencies, 50), percentile(latencies, 99),
		percentile(admittedLat, 50), percentile(admittedLat, 99),
		percentile(refusedLat, 50), percentile(refusedLat, 99))

	// Exactly the caps, running, each with its process.
	st := c.leader().Store.State()
	var ports []int
	for i, p := range orgPlans {
		if got, want := len(admitted[i]), admits(p); got != want {
			t.Errorf("org %d (%+v): %d creates admitted, want %d", i, p, got, want)
		}
		for _, id := range admitted[i] {
			a, err := st.Agent(id)
			if err != nil || a == nil {
				t.Errorf("org %d: admitted agent %s not in the state: %v", i, id, err)
				continue
			}
			if a.Status != store.StatusRunning {
				t.Errorf("org %d: admitted agent %s is %s", i, id, a.Status)
			}
			ports = append(ports, a.Port)
		}
	}
	all, err := st.Agents()
	if err != nil || len(all) != nAdmitted {
		t.Errorf("the state holds %d agents (%v), %d were admitted", len(all), err, nAdmitted)
	}
	if r := c.resources(); r.containers != nAdmitted || r.children != base.children+nAdmitted {
		t.Errorf("under load: %s; want %d containers and child processes", r, nAdmitted)
	}

	// Delete every agent the state holds (admitted or not), again spread
	// over the APIs.
	deleteAll(t, c, client, tokenOf)
	transport.CloseIdleConnections()

	// Back to the baseline. The slack absorbs the cluster's own transient
	// goroutines and descriptors (heartbeats, reconciles); a leak per
	// request or per agent would exceed it many times over.
	const goroutineSlack, fdSlack = 10, 5
	var now resources
	deadline := time.Now().Add(60 * time.Second)
	for {
		now = c.resources()
		if now.ports == 0 && now.containers == 0 && now.children == base.children &&
			now.goroutines <= base.goroutines+goroutineSlack && now.fds <= base.fds+fdSlack {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("60 s after deleting every agent: %s; baseline %s; descriptors opened since: %v",
				now, base, newFDs(baseFDs, fdTargets(t)))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("after deleting every agent: %s", now)
	for _, port := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Errorf("port %d of a deleted agent: %v", port, err)
			continue
		}
		l.Close()
	}
}

// sendCreates sends n creates from the clients, request i for the org of
// tokens[i%len(tokens)] through API urls[i%len(urls)], and returns the
// answers in request order.
func sendCreates(t *testing.T, client *http.Client, urls, tokens []string, n int, prefix string) []answer {
	t.Helper()
	answers := make([]answer, n)
	work := make(chan int)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := range work {
				org := i % len(tokens)
				answers[i] = create(t, client, urls[i%len(urls)], tokens[org], fmt.Sprintf("%s-%d", prefix, i))
				answers[i].org = org
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	return answers
}

// deleteAll deletes, through the APIs in turn, every agent the leader's
// state holds, with the token of its org.
func deleteAll(t *testing.T, c *cluster, client *http.Client, tokenOf map[string]string) {
	t.Helper()
	all, err := c.leader().Store.State().Agents()
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range all {
		if status, body := do(t, client, "DELETE", c.urls[i%len(c.urls)]+"/api/v1/agents/"+a.ID, tokenOf[a.OrgID], nil); status != http.StatusOK {
			t.Errorf("delete %s: %d %s", a.ID, status, body)
		}
	}
}

// create sends one create and returns its answer.
func create(t *testing.T, client *http.Client, base, token, name string) answer {
	t.Helper()
	start := time.Now()
	status, body := do(t, client, "POST", base+"/api/v1/agents", token, map[string]string{"name": name})
	a := answer{status: status, took: time.Since(start)}
	if status == 0 {
		return a // do reported it
	}
	var out struct {
		AgentID string `json:"agentId"`
		Error   struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Errorf("create %s: %d %q: %v", name, status, body, err)
	}
	a.agentID, a.code, a.message = out.AgentID, out.Error.Code, out.Error.Message
	if status == http.StatusOK && a.agentID == "" {
		t.Errorf("create %s: 200 without an agent id: %s", name, body)
	}
	return a
}

// do sends one request and returns the status and body; a transport error
// fails the test (the answer counts as status 0).
func do(t *testing.T, client *http.Client, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return 0, nil
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("%s %s: reading the answer: %v", method, url, err)
	}
	return resp.StatusCode, out
}

// percentile is the p-th percentile of ds (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)].Round(time.Microsecond)
}
