package proxy

import (
	"net/http/httptest"
	"net/http/httputil"
	"testing"
	"time"
)

func TestServerLagMarksAServerThatStopsAdvancing(t *testing.T) {
	const bound = 5 * time.Second
	t0 := time.Unix(1_000_000, 0)
	l := newServerLag(3, bound)
	round := func(at time.Duration, leader, stuck, healthy uint64) {
		l.observe([]serverStatus{
			{ok: true, leader: true, appliedIndex: leader, address: "c1"},
			{ok: true, appliedIndex: stuck, address: "c2"},
			{ok: true, appliedIndex: healthy, address: "c3"},
		}, t0.Add(at))
	}
	want := func(behind ...bool) {
		t.Helper()
		for i, w := range behind {
			if got := l.apiBehind(i); got != w {
				t.Fatalf("server %d behind = %v, want %v", i, got, w)
			}
			if got := l.clusterBehind([]string{"c1", "c2", "c3"}[i]); got != w {
				t.Fatalf("cluster address of server %d behind = %v, want %v", i, got, w)
			}
		}
	}

	// Server 2 stops at 10 while the others go on, one poll a second.
	for s := range 5 {
		round(time.Duration(s)*time.Second, uint64(11+s), 10, uint64(11+s))
	}
	want(false, false, false)
	round(5*time.Second+time.Millisecond, 16, 10, 16)
	want(false, true, false)
	if l.clusterBehind("unknown:1") {
		t.Fatal("an address never polled is behind")
	}

	// It catches up: from the next poll on it is not behind.
	round(7*time.Second, 18, 18, 18)
	want(false, false, false)
}

func TestNextAPIAddrPassesOverServersBehind(t *testing.T) {
	p := &Proxy{cfg: Config{APIAddrs: []string{"a1", "a2", "a3"}}, lag: newServerLag(3, time.Second)}
	p.lag.behind[1] = true
	for range 10 {
		if addr := p.nextAPIAddr(); addr == "a2" {
			t.Fatal("a read went to the server that is behind")
		}
	}
	p.lag.behind[0], p.lag.behind[2] = true, true
	seen := map[string]bool{}
	for range 10 {
		seen[p.nextAPIAddr()] = true
	}
	if len(seen) != 3 {
		t.Fatalf("with every server behind, reads went to %v, want all three in turn", seen)
	}
}

// TestWritesPassOverALeaderBehind: a write goes to the leader the proxy
// knows, unless the proxy sees it behind (an old leader whose disk is full,
// whose successor the proxy has not heard of): then to another server,
// which forwards it.
func TestWritesPassOverALeaderBehind(t *testing.T) {
	p := &Proxy{cfg: Config{APIAddrs: []string{"a1", "a2", "a3"}}, lag: newServerLag(3, time.Second)}
	p.leaderAPI.Store(1)
	target := func() string {
		in := httptest.NewRequest("POST", "http://api.test/api/v1/orgs", nil)
		pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
		p.rewriteAPI(pr)
		return pr.Out.URL.Host
	}
	if got := target(); got != "a2" {
		t.Fatalf("a write went to %s, want the leader a2", got)
	}
	p.lag.behind[1] = true
	for range 10 {
		if got := target(); got == "a2" {
			t.Fatal("a write went to the leader the proxy sees behind")
		}
	}
}
