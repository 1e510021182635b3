package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// `agenthost agents …`: the tenant API's agents, over REST.

// agentInfo is GET /api/v1/agents/{id} (and an item of the list).
type agentInfo struct {
	AgentID   string        `json:"agentId"`
	Name      string        `json:"name"`
	Status    string        `json:"status"`
	Busy      bool          `json:"busy"`
	URL       string        `json:"url"`
	Sessions  []sessionInfo `json:"sessions"`
	ErrorMsg  *string       `json:"errorMsg"`
	CreatedAt string        `json:"createdAt"`
	ScopeID   *string       `json:"scopeId"`
	Model     *string       `json:"model"`
	Tags      []string      `json:"tags"`
	Autostart bool          `json:"autostart"`
}

type sessionInfo struct {
	ID    string  `json:"id"`
	Title *string `json:"title"`
	URL   string  `json:"url"`
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func newAgentsCommand() *cobra.Command {
	f := &cliFlags{}
	cmd := &cobra.Command{
		Use:     "agents",
		Aliases: []string{"agent"},
		Short:   "Create agents, talk to them, and manage their lifecycle (a REST API client)",
		Long: `Create agents, talk to them, and manage their lifecycle through the REST API
at $AGENTHOST_ADDR (default ` + defaultAddr + `) with the tenant token
$AGENTHOST_TOKEN; --addr and --token override them. Output is a table for
people; --json prints the API's JSON for scripts. Exit codes: see docs/cli.md.`,
	}
	addNounFlags(cmd, f)
	cmd.AddCommand(
		agentsCreateCommand(f), agentsListCommand(f), agentsGetCommand(f), agentsSendCommand(f),
		agentsWaitCommand(f), agentsMessagesCommand(f),
		agentsLifecycleCommand(f, "stop", "Stop running agents (their sessions and history are kept)"),
		agentsLifecycleCommand(f, "start", "Start stopped agents (waits up to 30 s for each to be healthy)"),
		agentsLifecycleCommand(f, "restart", "Restart agents (applies their current secrets and model)"),
		agentsRemoveCommand(f), agentsLogsCommand(f), agentsPermissionsCommand(f), agentsQuestionsCommand(f),
	)
	return cmd
}

// agentIDInMessage finds the agent's ID in the API's 504 answer to a create
// ("agent ag… was not ready within 1m0s; it is still provisioning …").
var agentIDInMessage = regexp.MustCompile(`\bag[a-z2-7]{20}\b`)

func agentsCreateCommand(f *cliFlags) *cobra.Command {
	var prompt, hiddenPrompt, model, scope, scopeID string
	var tags []string
	var autostart, wait, quiet bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an agent; the API answers once it runs",
		Long: `Create an agent. The API answers once the agent is RUNNING (or, after 60 s,
with a timeout while the agent goes on provisioning).

With --wait the CLI shows the agent's progress on stderr and waits past the
API's 60 s, up to --timeout, for the agent to run — and, with --prompt, until
the agent has finished replying to the initial prompt.`,
		Example: `  agenthost agents create build-agent --prompt "Set up a Go module" --wait
  id=$(agenthost agents create ci-agent -q)`,
		Args: argCount(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			body := map[string]any{"name": a[0]}
			for k, v := range map[string]string{"initialPrompt": prompt, "hiddenPrompt": hiddenPrompt, "model": model, "scope": scope, "scopeId": scopeID} {
				if v != "" {
					body[k] = v
				}
			}
			if len(tags) > 0 {
				body["tags"] = tags
			}
			if autostart {
				body["autostart"] = true
			}
			ctx, cancel := withOptionalTimeout(cmd.Context(), wait, timeout)
			defer cancel()
			p := newProgress(cmd.ErrOrStderr(), !wait || f.json || quiet, a[0], time.Now)
			defer p.finish()
			p.set("PROVISIONING")
			var created struct {
				AgentID  string        `json:"agentId"`
				ScopeID  *string       `json:"scopeId"`
				URL      string        `json:"url"`
				Sessions []sessionInfo `json:"sessions"`
			}
			raw, err := c.do(ctx, http.MethodPost, "/agents", body, &created)
			var id string
			switch {
			case err == nil:
				id = created.AgentID
				p.setSubject(id)
				p.set("RUNNING")
			case wait && isStatus(err, http.StatusGatewayTimeout):
				var e *apiError
				errors.As(err, &e)
				if id = agentIDInMessage.FindString(e.Message); id == "" {
					return err
				}
				p.setSubject(id)
				var a agentInfo
				if a, raw, err = c.waitAgent(ctx, id, waitRunning, p, nil); err != nil {
					return err
				}
				// The create's own answer, from the agent as it is now.
				created.AgentID, created.ScopeID, created.URL, created.Sessions = a.AgentID, a.ScopeID, a.URL, a.Sessions
				if raw, err = json.Marshal(created); err != nil {
					return err
				}
			default:
				return err
			}
			if wait && prompt != "" {
				if _, _, err := c.waitAgent(ctx, id, waitIdle, p, nil); err != nil {
					return err
				}
			}
			p.finish()
			out := cmd.OutOrStdout()
			switch {
			case f.json:
				return printJSON(out, raw)
			case quiet:
				fmt.Fprintln(out, id)
				return nil
			}
			tw := newTable(out)
			row(tw, "AGENT", id)
			row(tw, "NAME", a[0])
			row(tw, "URL", created.URL)
			for _, s := range created.Sessions {
				row(tw, "SESSION", s.ID)
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&prompt, "prompt", "p", "", "initial prompt, sent in a new session once the agent runs")
	fl.StringVar(&hiddenPrompt, "hidden-prompt", "", "system prompt the agent gets with every message")
	fl.StringVar(&model, "model", "", "model (see GET /api/v1/models; default: the org's or the node's)")
	fl.StringVar(&scope, "scope", "", "scope by name (its secrets go to the agent)")
	fl.StringVar(&scopeID, "scope-id", "", "scope by ID")
	fl.StringArrayVar(&tags, "tag", nil, "tag (repeatable)")
	fl.BoolVar(&autostart, "autostart", false, "let the edge proxy start the agent when a request for it arrives while it is stopped")
	fl.BoolVarP(&wait, "wait", "w", false, "show progress and wait for the agent to run (and to finish the initial prompt)")
	fl.DurationVar(&timeout, "timeout", 5*time.Minute, "with --wait: how long to wait (0: no limit)")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print only the agent's ID")
	return cmd
}

// withOptionalTimeout bounds ctx by timeout when on and timeout > 0.
func withOptionalTimeout(ctx context.Context, on bool, timeout time.Duration) (context.Context, context.CancelFunc) {
	if !on || timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, timeout)
}

func agentsListCommand(f *cliFlags) *cobra.Command {
	var status, tag string
	var limit int
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the org's agents (status from the store; `get` for busy and sessions)",
		Args:    argCount(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			if limit < 0 {
				return usageError(errors.New("--limit must not be negative"))
			}
			var all []json.RawMessage
			var agents []agentInfo
			cursor := ""
			for {
				page := 1000
				if limit > 0 {
					page = min(page, limit-len(all))
				}
				q := url.Values{"limit": {fmt.Sprint(page)}}
				if status != "" {
					q.Set("status", strings.ToUpper(status))
				}
				if tag != "" {
					q.Set("tag", tag)
				}
				if cursor != "" {
					q.Set("cursor", cursor)
				}
				var resp struct {
					Agents     []json.RawMessage `json:"agents"`
					NextCursor *string           `json:"nextCursor"`
				}
				if _, err := c.do(cmd.Context(), http.MethodGet, "/agents?"+q.Encode(), nil, &resp); err != nil {
					return err
				}
				for _, r := range resp.Agents {
					var a agentInfo
					if err := json.Unmarshal(r, &a); err != nil {
						return err
					}
					all, agents = append(all, r), append(agents, a)
				}
				if resp.NextCursor == nil || (limit > 0 && len(all) >= limit) {
					cursor = deref(resp.NextCursor)
					break
				}
				cursor = *resp.NextCursor
			}
			out := cmd.OutOrStdout()
			if f.json {
				resp := map[string]any{"agents": all, "nextCursor": nil}
				if cursor != "" {
					resp["nextCursor"] = cursor
				}
				raw, err := json.Marshal(resp)
				if err != nil {
					return err
				}
				return printJSON(out, raw)
			}
			tw := newTable(out, "ID", "NAME", "STATUS", "MODEL", "TAGS", "CREATED")
			now := time.Now()
			for _, a := range agents {
				row(tw, a.AgentID, a.Name, a.Status, orDash(deref(a.Model)), orDash(strings.Join(a.Tags, ",")), ago(a.CreatedAt, now))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&status, "status", "", "only agents in this status: PROVISIONING, RUNNING, STOPPED or ERROR")
	cmd.Flags().StringVar(&tag, "tag", "", "only agents with this tag")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many agents (0: all)")
	return cmd
}

func agentsGetCommand(f *cliFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get AGENT",
		Short: "Show an agent: status, busy, URL and live sessions",
		Args:  argCount(1, 1, "AGENT"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var ag agentInfo
			raw, err := c.do(cmd.Context(), http.MethodGet, "/agents/"+url.PathEscape(a[0]), nil, &ag)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.json {
				return printJSON(out, raw)
			}
			status := ag.Status
			if ag.Status == "RUNNING" {
				status += map[bool]string{true: " (busy)", false: " (idle)"}[ag.Busy]
			}
			tw := newTable(out)
			row(tw, "ID", ag.AgentID)
			row(tw, "NAME", ag.Name)
			row(tw, "STATUS", status)
			if ag.ErrorMsg != nil {
				row(tw, "ERROR", *ag.ErrorMsg)
			}
			row(tw, "URL", ag.URL)
			row(tw, "MODEL", orDash(deref(ag.Model)))
			row(tw, "SCOPE", orDash(deref(ag.ScopeID)))
			row(tw, "TAGS", orDash(strings.Join(ag.Tags, ",")))
			row(tw, "AUTOSTART", fmt.Sprint(ag.Autostart))
			row(tw, "CREATED", ag.CreatedAt+" ("+ago(ag.CreatedAt, time.Now())+")")
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(ag.Sessions) == 0 {
				return nil
			}
			fmt.Fprintln(out)
			tw = newTable(out, "SESSION", "TITLE", "URL")
			for _, s := range ag.Sessions {
				row(tw, s.ID, orDash(deref(s.Title)), s.URL)
			}
			return tw.Flush()
		},
	}
}

// waitFor is what a wait waits for.
type waitFor string

const (
	waitRunning waitFor = "running"
	waitIdle    waitFor = "idle" // running and not busy
	waitStopped waitFor = "stopped"
)

// reached reports whether the agent is where want asks; an agent in ERROR
// never gets there by itself, and fails the wait.
func (want waitFor) reached(a agentInfo) (bool, error) {
	if a.Status == "ERROR" {
		return false, &exitError{code: exitFailed, err: fmt.Errorf("agent %s is in ERROR: %s", a.AgentID, deref(a.ErrorMsg))}
	}
	switch want {
	case waitRunning:
		return a.Status == "RUNNING", nil
	case waitIdle:
		return a.Status == "RUNNING" && !a.Busy, nil
	case waitStopped:
		return a.Status == "STOPPED", nil
	}
	return false, usageError(fmt.Errorf("--for %q: want running, idle or stopped", want))
}

// label is the state progress shows: the status, and for a running agent
// waited on to go idle, whether it is busy.
func (want waitFor) label(a agentInfo) string {
	if a.Status == "RUNNING" && want == waitIdle {
		return map[bool]string{true: "RUNNING, busy", false: "RUNNING, idle"}[a.Busy]
	}
	return a.Status
}

// waitAgent polls the agent until want is reached; each change of state
// goes to p. check, when given, sees every answer and decides instead
// whether the wait is over (reached says whether want is). An agent in ERROR
// fails the wait (exitFailed), a deleted one ends it (exitNotFound), and
// ctx's deadline is a timeout (exitTimeout). Answers that say the API or
// the agent's node is briefly unavailable are waited out.
func (c *apiClient) waitAgent(ctx context.Context, id string, want waitFor, p *progress, check func(a agentInfo, reached bool) (bool, error)) (agentInfo, json.RawMessage, error) {
	tick := time.NewTicker(c.poll)
	defer tick.Stop()
	last := ""
	for {
		var a agentInfo
		raw, err := c.do(ctx, http.MethodGet, "/agents/"+url.PathEscape(id), nil, &a)
		if ctx.Err() != nil {
			return a, nil, waitEnded(ctx, id, want, last)
		}
		var ex *exitError
		switch {
		case err == nil:
			last = want.label(a)
			p.set(last)
			done, err := want.reached(a)
			if err == nil && check != nil {
				done, err = check(a, done)
			}
			if ctx.Err() != nil {
				return a, nil, waitEnded(ctx, id, want, last)
			}
			if err != nil || done {
				return a, raw, err
			}
		case errors.As(err, &ex) && (ex.code == exitUnavailable || isStatus(err, http.StatusBadGateway)):
			p.set("waiting for the API: " + ex.Error())
		default:
			return a, nil, err
		}
		select {
		case <-ctx.Done():
			return a, nil, waitEnded(ctx, id, want, last)
		case <-tick.C:
		}
	}
}

// waitEnded is the error of a wait whose context ended: a timeout, or an
// interrupt.
func waitEnded(ctx context.Context, id string, want waitFor, last string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &exitError{code: exitTimeout, err: fmt.Errorf("timed out waiting for agent %s to be %s (last seen: %s)", id, want, orDash(last))}
	}
	return ctx.Err()
}

func agentsWaitCommand(f *cliFlags) *cobra.Command {
	var target string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait AGENT",
		Short: "Wait for an agent to run, to finish its work, or to stop",
		Long: `Wait until the agent is RUNNING (--for running, the default), running and not
busy (--for idle: it has finished replying), or STOPPED (--for stopped).
Changes of state go to stderr with the time elapsed. An agent in ERROR ends
the wait with exit code 8, a timeout with 7.`,
		Example: `  agenthost agents wait ag2x… --for idle --timeout 10m`,
		Args:    argCount(1, 1, "AGENT"),
		RunE: func(cmd *cobra.Command, a []string) error {
			want := waitFor(strings.ToLower(target))
			if _, err := want.reached(agentInfo{}); err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			ctx, cancel := withOptionalTimeout(cmd.Context(), true, timeout)
			defer cancel()
			p := newProgress(cmd.ErrOrStderr(), f.json, a[0], time.Now)
			defer p.finish()
			ag, raw, err := c.waitAgent(ctx, a[0], want, p, nil)
			if err != nil {
				return err
			}
			p.finish()
			if f.json {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", ag.AgentID, want.label(ag))
			return nil
		},
	}
	cmd.Flags().StringVar(&target, "for", string(waitRunning), "running, idle (running and not busy) or stopped")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait (0: no limit)")
	return cmd
}

func agentsLifecycleCommand(f *cliFlags, verb, short string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " AGENT…",
		Short: short,
		Args:  argCount(1, -1, "AGENT…"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, id := range a {
				var res struct {
					AgentID   string `json:"agentId"`
					Status    string `json:"status"`
					Started   *bool  `json:"started"`
					Stopped   *bool  `json:"stopped"`
					Restarted *bool  `json:"restarted"`
				}
				raw, err := c.do(cmd.Context(), http.MethodPost, "/agents/"+url.PathEscape(id)+"/"+verb, nil, &res)
				if err != nil {
					return err
				}
				if f.json {
					if err := printJSON(out, raw); err != nil {
						return err
					}
					continue
				}
				note := ""
				if (res.Started != nil && !*res.Started) || (res.Stopped != nil && !*res.Stopped) {
					note = " (it was already " + strings.ToLower(res.Status) + ")"
				}
				fmt.Fprintf(out, "%s %s%s\n", res.AgentID, res.Status, note)
			}
			return nil
		},
	}
}

func agentsRemoveCommand(f *cliFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "rm AGENT…",
		Aliases: []string{"delete"},
		Short:   "Delete agents: container, workspace and history are removed",
		Args:    argCount(1, -1, "AGENT…"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, id := range a {
				raw, err := c.do(cmd.Context(), http.MethodDelete, "/agents/"+url.PathEscape(id), nil, nil)
				if err != nil {
					return err
				}
				if f.json {
					if err := printJSON(out, raw); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(out, "%s deleted\n", id)
			}
			return nil
		},
	}
}
