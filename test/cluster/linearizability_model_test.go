package cluster

import (
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// TestAgentModel runs the linearizability tests' specification on small
// histories with known answers, so that the checker is known to reject the
// anomalies the cluster tests look for (and to accept what the API may
// legally answer) without a cluster.
func TestAgentModel(t *testing.T) {
	const id = "ag1"
	type op struct {
		kind      linKind
		out       linOutput
		call, ret int64 // ret -1: the outcome is unknown
	}
	ok := func(code int) linOutput { return linOutput{Code: code} }
	status := func(s string) linOutput { return linOutput{Code: http.StatusOK, Status: s} }
	stopped := func(did bool) linOutput { return linOutput{Code: http.StatusOK, Stopped: did} }
	unknown := linOutput{Unknown: true}
	tests := []struct {
		name string
		ops  []op
		want porcupine.CheckResult
	}{
		{"create, get, stop, get, delete, get", []op{
			{linCreate, ok(200), 0, 10}, {linGet, status("RUNNING"), 11, 12},
			{linStop, stopped(true), 13, 20}, {linGet, status("STOPPED"), 21, 22},
			{linStop, stopped(false), 23, 24}, {linDelete, ok(200), 25, 26}, {linGet, ok(404), 27, 28},
		}, porcupine.Ok},
		{"a get after an acknowledged delete shows the agent", []op{
			{linCreate, ok(200), 0, 10}, {linDelete, ok(200), 11, 12}, {linGet, status("RUNNING"), 13, 14},
		}, porcupine.Illegal},
		{"a get concurrent with the delete shows the agent", []op{
			{linCreate, ok(200), 0, 10}, {linDelete, ok(200), 11, 14}, {linGet, status("RUNNING"), 12, 13},
		}, porcupine.Ok},
		{"a list after an acknowledged stop shows it running", []op{
			{linCreate, ok(200), 0, 10}, {linStop, stopped(true), 11, 12}, {linList, status("RUNNING"), 13, 14},
		}, porcupine.Illegal},
		{"a get after an acknowledged create misses it", []op{
			{linCreate, ok(200), 0, 10}, {linGet, ok(404), 11, 12},
		}, porcupine.Illegal},
		{"STOPPED, then RUNNING again, during an unknown stop", []op{
			{linCreate, ok(200), 0, 10}, {linStop, unknown, 11, -1},
			{linList, status("STOPPED"), 12, 13}, {linList, status("RUNNING"), 14, 15},
		}, porcupine.Illegal},
		{"a stop that acts twice", []op{
			{linCreate, ok(200), 0, 10}, {linStop, stopped(true), 11, 12}, {linStop, stopped(true), 13, 14},
		}, porcupine.Illegal},
		{"a stop answered 400 while another is in flight", []op{
			{linCreate, ok(200), 0, 10}, {linStop, stopped(true), 11, 20}, {linStop, ok(400), 12, 13},
		}, porcupine.Ok},
		{"an unknown create seen, an unknown delete taking effect later", []op{
			{linCreate, unknown, 0, -1}, {linGet, status("PROVISIONING"), 5, 6},
			{linDelete, unknown, 7, -1}, {linGet, status("RUNNING"), 8, 9}, {linGet, ok(404), 10, 11},
		}, porcupine.Ok},
		{"an unknown delete seen, then the agent again", []op{
			{linCreate, ok(200), 0, 1}, {linDelete, unknown, 2, -1},
			{linGet, ok(404), 3, 4}, {linGet, status("RUNNING"), 5, 6},
		}, porcupine.Illegal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var history []porcupine.Operation
			for i, o := range tt.ops {
				ret := o.ret
				if ret < 0 {
					ret = math.MaxInt64
				}
				history = append(history, porcupine.Operation{ClientId: i, Input: linInput{Kind: o.kind, AgentID: id}, Call: o.call, Output: o.out, Return: ret})
			}
			if got, _ := porcupine.CheckOperationsVerbose(agentModel, history, 10*time.Second); got != tt.want {
				t.Errorf("porcupine says %s, want %s", got, tt.want)
			}
		})
	}
}
