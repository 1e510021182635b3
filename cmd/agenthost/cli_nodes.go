package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

// `agenthost nodes …`: the host pool, through the operator API.

type nodeInfo struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Address  string `json:"address"`
	Status   string `json:"status"`
	Capacity struct {
		CPUMillis int64 `json:"cpuMillis"`
		MemoryMB  int64 `json:"memoryMB"`
		MaxAgents int   `json:"maxAgents"`
	} `json:"capacity"`
	Allocated struct {
		CPUMillis int64 `json:"cpuMillis"`
		MemoryMB  int64 `json:"memoryMB"`
		Agents    int   `json:"agents"`
	} `json:"allocated"`
	AgentCount int     `json:"agentCount"`
	LastSeen   *string `json:"lastSeen"`
	// Drain is set while the node drains.
	Drain *struct {
		Agents   string  `json:"agents"`
		Deadline *string `json:"deadline"`
	} `json:"drain"`
}

// statusText is the node's status and, while it drains, what happens to
// its agents.
func (n nodeInfo) statusText() string {
	if n.Drain == nil || n.Drain.Agents == "" || n.Drain.Agents == "keep" {
		return n.Status
	}
	when := "now"
	if n.Drain.Deadline != nil {
		if t, err := time.Parse(time.RFC3339, *n.Drain.Deadline); err == nil {
			when = "at " + t.Local().Format("2006-01-02 15:04:05")
		}
	}
	return fmt.Sprintf("%s (%s agents %s)", n.Status, n.Drain.Agents, when)
}

func newNodesCommand() *cobra.Command {
	f := &cliFlags{operator: true}
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the host pool's nodes; drain, undrain and remove them (operator API)",
		Long: `List the nodes that run agents, with capacity, allocation and agent count;
drain a node (no new placements; its agents optionally stopped or moved) or
undrain it; remove a node for good. Uses the operator token:
$AGENTHOST_OPERATOR_TOKEN, else $AGENTHOST_TOKEN, or --token.`,
	}
	addNounFlags(cmd, f)
	cmd.AddCommand(nodesListCommand(f), nodesStatusCommand(f, "drain", "Drain nodes: no new agents are placed on them"),
		nodesStatusCommand(f, "undrain", "Undrain nodes: they take new agents again"), nodesRemoveCommand(f))
	return cmd
}

func (c *apiClient) nodes(ctx context.Context) ([]nodeInfo, []byte, error) {
	var list struct {
		Nodes []nodeInfo `json:"nodes"`
	}
	raw, err := c.do(ctx, http.MethodGet, "/nodes", nil, &list)
	return list.Nodes, raw, err
}

func nodesListCommand(f *cliFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List nodes: status, CPU and memory allocated of capacity, agents",
		Args:    argCount(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			nodes, raw, err := c.nodes(cmd.Context())
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			tw := newTable(cmd.OutOrStdout(), "ID", "NAME", "ADDRESS", "STATUS", "CPU", "MEMORY", "AGENTS", "LAST SEEN")
			now := time.Now()
			for _, n := range nodes {
				agents := fmt.Sprint(n.AgentCount)
				if n.Capacity.MaxAgents > 0 {
					agents += fmt.Sprintf("/%d", n.Capacity.MaxAgents)
				}
				row(tw, n.ID, n.Name, n.Address, n.statusText(),
					fmt.Sprintf("%s/%s", cores(n.Allocated.CPUMillis), cores(n.Capacity.CPUMillis)),
					fmt.Sprintf("%d/%d MB", n.Allocated.MemoryMB, n.Capacity.MemoryMB),
					agents, ago(deref(n.LastSeen), now))
			}
			return tw.Flush()
		},
	}
}

// cores shows millicores as cores: 1500 → "1.5".
func cores(millis int64) string {
	return fmt.Sprintf("%g", float64(millis)/1000)
}

func nodesStatusCommand(f *cliFlags, verb, short string) *cobra.Command {
	var agents string
	var deadline time.Duration
	cmd := &cobra.Command{
		Use:   verb + " NODE…",
		Short: short + " (NODE is an ID or a name)",
		Args:  argCount(1, -1, "NODE…"),
		RunE: func(cmd *cobra.Command, a []string) error {
			var body any // none unless drain says what to do with the agents
			if verb == "drain" && (changed(cmd, "agents") || changed(cmd, "deadline")) {
				switch agents {
				case "keep", "stop", "move":
				default:
					return usageError(fmt.Errorf("--agents %q: want keep, stop or move", agents))
				}
				if deadline < 0 || (deadline > 0 && agents == "keep") {
					return usageError(fmt.Errorf("--deadline needs --agents stop or move"))
				}
				body = map[string]any{"agents": agents, "deadlineSeconds": int64(deadline.Seconds())}
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			var r nodeResolver
			for _, arg := range a {
				var n nodeInfo
				raw, err := r.call(cmd.Context(), c, http.MethodPost, arg, "/"+verb, body, &n)
				if err != nil {
					return err
				}
				if f.json {
					if err := printJSON(cmd.OutOrStdout(), raw); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s (%s) %s\n", n.ID, n.Name, n.statusText())
			}
			return nil
		},
	}
	if verb == "drain" {
		cmd.Long = `Drain nodes: the scheduler places no new agents on them. With --agents the
node's agents are also emptied out at --deadline (default: at once): stop
stops them (start places them again, elsewhere if need be), move re-places
them on other nodes with their ports and URLs; keep (the default) leaves them
running.`
		cmd.Example = `  agenthost nodes drain node-3
  agenthost nodes drain node-3 --agents move --deadline 10m`
		cmd.Flags().StringVar(&agents, "agents", "keep", "what happens to the node's agents: keep, stop or move")
		cmd.Flags().DurationVar(&deadline, "deadline", 0, "with --agents stop or move: how long the agents have first (0: at once)")
	}
	return cmd
}

// nodeResolver calls the API on a node named by its ID or, failing that,
// by its name; the list of nodes is fetched once for all arguments.
type nodeResolver struct {
	known []nodeInfo
}

func (r *nodeResolver) call(ctx context.Context, c *apiClient, method, arg, suffix string, body, out any) ([]byte, error) {
	raw, err := c.do(ctx, method, "/nodes/"+url.PathEscape(arg)+suffix, body, out)
	if !isStatus(err, http.StatusNotFound) {
		return raw, err
	}
	if r.known == nil {
		if r.known, _, err = c.nodes(ctx); err != nil {
			return nil, err
		}
	}
	for _, n := range r.known {
		if n.Name == arg && n.ID != arg {
			return c.do(ctx, method, "/nodes/"+url.PathEscape(n.ID)+suffix, body, out)
		}
	}
	return nil, &exitError{code: exitNotFound, err: fmt.Errorf("node %q not found (by ID or name)", arg)}
}

func nodesRemoveCommand(f *cliFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NODE…",
		Aliases: []string{"delete"},
		Short:   "Remove nodes for good (refused while agents are placed on them: drain with --agents move or stop first)",
		Args:    argCount(1, -1, "NODE…"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var r nodeResolver
			for _, arg := range a {
				var res struct {
					ID string `json:"id"`
				}
				raw, err := r.call(cmd.Context(), c, http.MethodDelete, arg, "", nil, &res)
				if err != nil {
					return err
				}
				if f.json {
					if err := printJSON(cmd.OutOrStdout(), raw); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s removed\n", res.ID)
			}
			return nil
		},
	}
}
