package clusterrpc

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestStoreAndRaftMetricsAreExported(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := TestServerConfig(t, "server-0", t.TempDir())
	cfg.Store.Registerer = reg
	srv, err := StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown() })
	tc := &TestCluster{t: t, Servers: []*Server{srv}}
	tc.WaitForLeader()
	if _, err := createOrg(t, srv.Store, "org-m"); err != nil {
		t.Fatal(err)
	}
	if _, err := createOrg(t, srv.Store, "org-m"); err == nil {
		t.Fatal("duplicate accepted")
	}
	if _, err := srv.Store.ConsistentState(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Store.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}

	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	values := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.GetGauge() != nil:
				values[key] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				values[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				values[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]func(float64) bool{
		"agenthost_raft_is_leader":                                                    func(v float64) bool { return v == 1 },
		"agenthost_raft_term":                                                         func(v float64) bool { return v >= 1 },
		"agenthost_raft_last_index":                                                   func(v float64) bool { return v >= 3 },
		"agenthost_raft_commit_index":                                                 func(v float64) bool { return v >= 3 },
		"agenthost_raft_applied_index":                                                func(v float64) bool { return v >= 3 },
		"agenthost_raft_fsm_applied_index":                                            func(v float64) bool { return v >= 3 },
		"agenthost_raft_last_contact_seconds":                                         func(v float64) bool { return v == 0 },
		"agenthost_store_apply_duration_seconds,path=leader,result=ok":                func(v float64) bool { return v == 1 },
		"agenthost_store_apply_duration_seconds,path=leader,result=already_exists":    func(v float64) bool { return v == 1 },
		"agenthost_store_fsm_apply_duration_seconds,command=org_create":               func(v float64) bool { return v == 2 },
		"agenthost_store_fsm_commands_total,command=org_create,result=ok":             func(v float64) bool { return v == 1 },
		"agenthost_store_fsm_commands_total,command=org_create,result=already_exists": func(v float64) bool { return v == 1 },
		"agenthost_store_snapshots_total,event=create":                                func(v float64) bool { return v == 1 },
		"agenthost_store_snapshots_total,event=persist":                               func(v float64) bool { return v == 1 },
		"agenthost_store_read_index_duration_seconds,result=ok":                       func(v float64) bool { return v == 1 },
	}
	for key, ok := range want {
		v, found := values[key]
		if !found {
			t.Errorf("metric %s missing", key)
			continue
		}
		if !ok(v) {
			t.Errorf("metric %s = %v", key, v)
		}
	}
}
