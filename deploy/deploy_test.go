// Tests of deploy/: the Prometheus configuration, the alert rules and the
// Grafana dashboard are checked with Debian's promtool and evaluated by a
// real Prometheus scraping a running cluster, so that no panel or alert
// reads a metric nobody exports.
package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
)

// TestPromtoolChecksConfigAndRules: the shipped scrape configuration and
// alert rules pass `promtool check config` and `promtool check rules`.
func TestPromtoolChecksConfigAndRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	for _, args := range [][]string{
		{"check", "config", "prometheus/prometheus.yml"},
		{"check", "rules", "prometheus/alerts.yml"},
	} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// panelQuery is one query of the Grafana dashboard.
type panelQuery struct {
	panel, expr string
}

func dashboardQueries(t *testing.T) []panelQuery {
	t.Helper()
	b, err := os.ReadFile("grafana/agenthost.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana/agenthost.json: %v", err)
	}
	var qs []panelQuery
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			qs = append(qs, panelQuery{panel: p.Title, expr: tg.Expr})
		}
	}
	return qs
}

// TestDashboardAndAlertsAgainstARunningCluster starts three control
// servers with their REST APIs, a node agent and an edge proxy in this
// process, and Debian's prometheus with the shipped configuration and alert
// rules scraping them. After a tenant fills its running cap and the node's
// one agent slot through the proxy, every dashboard query must return a
// number, every alert rule must evaluate cleanly over metrics that exist,
// and exactly the two alerts that situation calls for must be active.
func TestDashboardAndAlertsAgainstARunningCluster(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	_, token, err := c.leaderAPI().CreateOrg(ctx, "capped", store.Plan{MaxRunning: 1}, "metrics test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.leaderAPI().CreateOrg(ctx, "roomy", store.Plan{}, "metrics test"); err != nil {
		t.Fatal(err)
	}
	prom := startPrometheus(t, c.targets)
	// Samples before the activity, so that rate() sees it as an increase.
	time.Sleep(3 * time.Second)

	code, body := c.do("POST", "", "/api/v1/agents", token, map[string]string{"name": "first"})
	if code != 200 {
		t.Fatalf("create: %d %s", code, body)
	}
	var created struct {
		AgentID string `json:"agentId"`
	}
	if err := json.Unmarshal(body, &created); err != nil || created.AgentID == "" {
		t.Fatalf("create answered %s", body)
	}
	id := created.AgentID
	if code, body := c.do("POST", "", "/api/v1/agents", token, map[string]string{"name": "second"}); code != 429 {
		t.Fatalf("a create past the running cap: %d %s, want 429", code, body)
	}
	a, _ := c.leader().Store.State().Agent(id)
	for _, host := range []string{fmt.Sprintf("a%d", a.Port), id} {
		if code, body := c.do("GET", host, "/", "", nil); code != 200 {
			t.Fatalf("GET %s through the proxy: %d %s", host, code, body)
		}
	}
	// A stop and a start: a placement and a container start more.
	for _, step := range []struct {
		verb   string
		status store.AgentStatus
	}{{"stop", store.StatusStopped}, {"start", store.StatusRunning}} {
		if code, body := c.do("POST", "", "/api/v1/agents/"+id+"/"+step.verb, token, nil); code != 200 {
			t.Fatalf("%s: %d %s", step.verb, code, body)
		}
		c.waitAgent(id, step.status)
	}
	// Until Prometheus has scraped the last of it.
	for _, expr := range []string{
		`sum(agenthost_nodeagent_agent_start_duration_seconds_count{action="start"}) >= 1`,
		`max(agenthost_org_running_agents{org_name="capped"}) >= 1`,
		`sum(agenthost_scheduler_rejections_total{reason="running_cap"}) >= 1`,
	} {
		waitFor(t, 20*time.Second, expr, func() bool {
			res, err := prom.query(expr)
			return err == nil && len(res) > 0
		})
	}
	time.Sleep(2 * time.Second)

	t.Run("dashboard", func(t *testing.T) {
		for _, q := range dashboardQueries(t) {
			// Grafana's $__rate_interval, for a scrape every second.
			expr := strings.ReplaceAll(q.expr, "$__rate_interval", "1m")
			res, err := prom.query(expr)
			switch {
			case err != nil:
				t.Errorf("panel %q: %s: %v", q.panel, q.expr, err)
			case len(res) == 0:
				t.Errorf("panel %q: %s: no result", q.panel, q.expr)
			case !slices.ContainsFunc(res, finite):
				t.Errorf("panel %q: %s: no number in %v", q.panel, q.expr, res)
			}
		}
	})

	t.Run("cluster state from the leader only", func(t *testing.T) {
		res, err := prom.query(`count(count by (instance) (agenthost_cluster_nodes))`)
		if err != nil || len(res) != 1 || res[0].value() != "1" {
			t.Fatalf("servers exporting the cluster's state: %v %v, want 1", res, err)
		}
	})

	t.Run("alerts", func(t *testing.T) {
		var rules struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Query     string `json:"query"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
					Type      string `json:"type"`
				} `json:"rules"`
			} `json:"groups"`
		}
		// Every rule evaluated at least once.
		waitFor(t, 10*time.Second, "every rule to be evaluated", func() bool {
			if err := prom.get("/api/v1/rules", nil, &rules); err != nil {
				t.Fatal(err)
			}
			for _, g := range rules.Groups {
				for _, r := range g.Rules {
					if r.Health == "unknown" {
						return false
					}
				}
			}
			return true
		})
		names := exportedNames(t, prom)
		shipped, err := os.ReadFile("prometheus/alerts.yml")
		if err != nil {
			t.Fatal(err)
		}
		loaded := 0
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				loaded++
				if r.Health != "ok" {
					t.Errorf("rule %s: %s (%s)", r.Name, r.Health, r.LastError)
				}
				if _, err := prom.query(r.Query); err != nil {
					t.Errorf("rule %s: %v", r.Name, err)
				}
				for _, m := range metricNames(r.Query) {
					if !names[m] {
						t.Errorf("rule %s reads %s, which no component exports", r.Name, m)
					}
				}
			}
		}
		if want := strings.Count(string(shipped), "- alert:"); loaded != want {
			t.Errorf("prometheus loaded %d rules, alerts.yml has %d", loaded, want)
		}

		// The tenant at its cap and the node's full agent slots; nothing
		// else (the cluster is otherwise healthy).
		want := []string{"AgenthostNodeCapacityHigh node=" + testNode + " resource=agents", "AgenthostOrgAtRunningCap org_name=capped"}
		var got []string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			var active struct {
				Alerts []struct {
					Labels map[string]string `json:"labels"`
				} `json:"alerts"`
			}
			if err := prom.get("/api/v1/alerts", nil, &active); err != nil {
				t.Fatal(err)
			}
			got = nil
			for _, a := range active.Alerts {
				l := a.Labels
				switch l["alertname"] {
				case "AgenthostNodeCapacityHigh":
					got = append(got, fmt.Sprintf("%s node=%s resource=%s", l["alertname"], l["node"], l["resource"]))
				case "AgenthostOrgAtRunningCap":
					got = append(got, fmt.Sprintf("%s org_name=%s", l["alertname"], l["org_name"]))
				default:
					got = append(got, fmt.Sprint(l))
				}
			}
			slices.Sort(got)
			if slices.Equal(got, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("active alerts (pending or firing):\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		}
	})

	t.Run("promtool check metrics", func(t *testing.T) {
		promtool := requireTool(t, "promtool")
		for _, tg := range c.targets {
			cmd := exec.Command(promtool, "check", "metrics")
			cmd.Stdin = strings.NewReader(string(scrape(t, tg.addr)))
			if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("%s %s: promtool check metrics: %v\n%s", tg.job, tg.name, err, out)
			}
		}
	})
}

func finite(s sample) bool {
	v, err := strconv.ParseFloat(s.value(), 64)
	return err == nil && !math.IsNaN(v) && !math.IsInf(v, 0)
}

// exportedNames are the metric names Prometheus holds (up included).
func exportedNames(t *testing.T, prom *prometheusServer) map[string]bool {
	t.Helper()
	res, err := prom.query(`count by (__name__) ({__name__=~"agenthost_.+|up"})`)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, s := range res {
		names[s.Metric["__name__"]] = true
	}
	return names
}

var metricName = regexp.MustCompile(`\b(agenthost_[a-z0-9_]+\b|up)\{?`)

// metricNames are the agenthost metrics (and up) an expression reads.
func metricNames(expr string) []string {
	var out []string
	for _, m := range metricName.FindAllStringSubmatch(expr, -1) {
		if m[1] != "up" || strings.HasSuffix(m[0], "{") {
			out = append(out, m[1])
		}
	}
	return out
}
