package proxy

import (
	"testing"

	routev1 "github.com/agenthost/agenthost/proto/agenthost/route/v1"
)

// agentIDFor makes a well-formed agent ID from i.
func agentIDFor(i int) string {
	b := []byte("agaaaaaaaaaaaaaaaaaaaa")
	for j := len(b) - 1; i > 0; j-- {
		b[j] = byte('a' + i%26)
		i /= 26
	}
	return string(b)
}

// bigTable holds n running agents on ports 10000…
func bigTable(n int) *table {
	t := newTable("opencode")
	m := &routev1.WatchRoutesResponse{Snapshot: true, Index: 1}
	for i := range n {
		m.Routes = append(m.Routes, &routev1.Route{AgentId: agentIDFor(i), Port: uint32(10000 + i), NodeAddress: "10.0.0.1",
			Status: "RUNNING", Desired: "running", RuntimePassword: "pw"})
	}
	t.apply(m)
	return t
}

// lookup is what a request costs before it is forwarded: match the host,
// find the route.
func lookup(d Domain, t *table, host string) *route {
	m := d.Match(host)
	switch m.Kind {
	case RouteAgentPort:
		return t.lookupPort(m.Port)
	case RouteAgentID:
		return t.lookupID(m.AgentID)
	}
	return nil
}

func TestRouteLookupAllocatesNothing(t *testing.T) {
	d, _ := NewDomain("example.test")
	tab := bigTable(10000)
	for _, host := range []string{"a10042.example.test:443", agentIDFor(42) + ".example.test"} {
		if r := lookup(d, tab, host); r == nil {
			t.Fatalf("%s: no route", host)
		}
		if n := testing.AllocsPerRun(1000, func() { lookup(d, tab, host) }); n != 0 {
			t.Errorf("%s: %v allocations per lookup", host, n)
		}
	}
}

func TestTableAppliesSnapshotsAndChanges(t *testing.T) {
	tab := bigTable(3)
	tab.apply(&routev1.WatchRoutesResponse{Index: 2, Routes: []*routev1.Route{
		{AgentId: agentIDFor(0), Deleted: true, Port: 10000},
		{AgentId: agentIDFor(1), Port: 20001, Status: "STOPPED", Desired: "stopped"}, // moved to another port
	}})
	if tab.lookupPort(10000) != nil || tab.lookupID(agentIDFor(0)) != nil {
		t.Fatal("a deleted route is still there")
	}
	if tab.lookupPort(10001) != nil || tab.lookupPort(20001) == nil || tab.lookupPort(20001).running() {
		t.Fatal("a changed route kept its old port or state")
	}
	tab.apply(&routev1.WatchRoutesResponse{Index: 3, Snapshot: true, Routes: []*routev1.Route{{AgentId: "agx", Port: 30000}}})
	if tab.size() != 1 || tab.lookupPort(20001) != nil {
		t.Fatal("a snapshot did not replace the table")
	}
}

func BenchmarkRouteLookup(b *testing.B) {
	d, _ := NewDomain("example.test")
	tab := bigTable(10000)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if lookup(d, tab, "a10042.example.test:443") == nil {
				b.Fatal("no route")
			}
		}
	})
}
