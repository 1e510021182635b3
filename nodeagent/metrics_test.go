package nodeagent

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/runtime"
)

// busyRuntime is a runtime adapter that only answers Busy.
type busyRuntime struct {
	runtime.Runtime
	busy bool
}

func (b busyRuntime) Busy() bool   { return b.busy }
func (b busyRuntime) Close() error { return nil }

// TestMetricsCountBusyAgentsAndContainers: busy agents are the adapters
// that say so, read at scrape time; containers are counted by state, every
// state present even at zero.
func TestMetricsCountBusyAgentsAndContainers(t *testing.T) {
	reg := prometheus.NewRegistry()
	rts := newRuntimes(nil)
	m := newMetrics(reg, rts)
	rts.byID["a"] = &liveRuntime{rt: busyRuntime{busy: true}}
	rts.byID["b"] = &liveRuntime{rt: busyRuntime{busy: false}}
	rts.byID["c"] = &liveRuntime{rt: busyRuntime{busy: true}}
	m.observeContainers([]driver.Container{{AgentID: "a", State: driver.StateRunning}, {AgentID: "b", State: driver.StateRunning}, {AgentID: "d", State: driver.StateStopped}})

	gauges := func() map[string]float64 {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, f := range families {
			for _, metric := range f.GetMetric() {
				key := f.GetName()
				for _, l := range metric.GetLabel() {
					key += " " + l.GetName() + "=" + l.GetValue()
				}
				if g := metric.GetGauge(); g != nil {
					out[key] = g.GetValue()
				}
			}
		}
		return out
	}
	want := map[string]float64{
		"agenthost_nodeagent_busy_agents":              2,
		"agenthost_nodeagent_containers state=created": 0,
		"agenthost_nodeagent_containers state=running": 2,
		"agenthost_nodeagent_containers state=stopped": 1,
	}
	got := gauges()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	delete(rts.byID, "a")
	if got := gauges()["agenthost_nodeagent_busy_agents"]; got != 1 {
		t.Fatalf("busy agents after a drop = %v, want 1", got)
	}
}
