package nodeagent

import (
	"reflect"
	"testing"

	"github.com/agenthost/agenthost/nodeagent/driver"
)

func TestDiff(t *testing.T) {
	running := func(id string) driver.Container { return driver.Container{AgentID: id, State: driver.StateRunning} }
	exited := func(id string, code uint32, oom bool) driver.Container {
		return driver.Container{AgentID: id, State: driver.StateStopped, ExitCode: code, OOMKilled: oom}
	}
	want := func(kind ActionKind, id string) Action { return Action{Kind: kind, AgentID: id} }
	cases := []struct {
		name    string
		desired []Assignment
		actual  []driver.Container
		want    []Action
	}{
		{"nothing to do", nil, nil, nil},
		{"new agent is created",
			[]Assignment{{AgentID: "a", Desired: "running", Status: statusProvisioning}}, nil,
			[]Action{want(ActCreate, "a")}},
		{"running and reported: nothing",
			[]Assignment{{AgentID: "a", Desired: "running", Status: statusRunning}}, []driver.Container{running("a")},
			nil},
		{"running but not yet reported: health check",
			[]Assignment{{AgentID: "a", Desired: "running", Status: statusProvisioning}}, []driver.Container{running("a")},
			[]Action{want(ActCheck, "a")}},
		{"started again after a stop",
			[]Assignment{{AgentID: "a", Desired: "running", Status: statusProvisioning}}, []driver.Container{exited("a", 137, false)},
			[]Action{want(ActStart, "a")}},
		{"died while running: reported, not restarted",
			[]Assignment{{AgentID: "a", Desired: "running", Status: statusRunning}}, []driver.Container{exited("a", 3, false)},
			[]Action{{Kind: ActReport, AgentID: "a", Status: statusError, ErrorMsg: "the agent's process exited with code 3"}}},
		{"OOM kill is named",
			[]Assignment{{AgentID: "a", Desired: "running", Status: statusRunning}}, []driver.Container{exited("a", 137, true)},
			[]Action{{Kind: ActReport, AgentID: "a", Status: statusError, ErrorMsg: "the agent ran out of memory and was killed (OOM); give it more memory or use less"}}},
		{"error already reported: wait for the user",
			[]Assignment{{AgentID: "a", Desired: "running", Status: statusError}}, []driver.Container{exited("a", 3, false)},
			nil},
		{"stop a running agent",
			[]Assignment{{AgentID: "a", Desired: "stopped", Status: statusRunning}}, []driver.Container{running("a")},
			[]Action{want(ActStop, "a")}},
		{"stopped container, status not yet STOPPED",
			[]Assignment{{AgentID: "a", Desired: "stopped", Status: statusRunning}}, []driver.Container{exited("a", 0, false)},
			[]Action{{Kind: ActReport, AgentID: "a", Status: statusStopped}}},
		{"stopped and reported: nothing",
			[]Assignment{{AgentID: "a", Desired: "stopped", Status: statusStopped}}, []driver.Container{exited("a", 0, false)},
			nil},
		{"container of an agent not assigned here is deleted",
			nil, []driver.Container{running("stale")},
			[]Action{want(ActDelete, "stale")}},
		{"order is by agent",
			[]Assignment{{AgentID: "b", Desired: "running"}, {AgentID: "a", Desired: "running"}}, []driver.Container{running("c")},
			[]Action{want(ActCreate, "a"), want(ActCreate, "b"), want(ActDelete, "c")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := diff(tc.desired, tc.actual)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("diff = %+v\nwant   %+v", got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ControlAddrs, cfg.AdvertiseAddr = []string{"127.0.0.1:7400"}, "127.0.0.1"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	if cfg.CPUMillis <= 0 || cfg.MemoryMB <= 0 {
		t.Fatalf("capacity not read from the host: %d millicores, %d MB", cfg.CPUMillis, cfg.MemoryMB)
	}
	bad := cfg
	bad.ControlAddrs = nil
	if bad.Validate() == nil {
		t.Fatal("no control address accepted")
	}
	bad = cfg
	bad.Runtimes = map[string]Runtime{"x": {Image: "i", Port: 0, HealthPath: "/h"}}
	if bad.Validate() == nil {
		t.Fatal("runtime without a port accepted")
	}
}
