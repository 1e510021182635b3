package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// `agenthost orgs …`: tenants and their plans, through the operator API.

type orgInfo struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Plan struct {
		MaxAgents  int `json:"maxAgents"`
		MaxRunning int `json:"maxRunning"`
	} `json:"plan"`
	DefaultModel *string `json:"defaultModel"`
	Usage        *struct {
		Agents  int `json:"agents"`
		Running int `json:"running"`
	} `json:"usage"`
	CreatedAt string `json:"createdAt"`
}

func newOrgsCommand() *cobra.Command {
	f := &cliFlags{operator: true}
	cmd := &cobra.Command{
		Use:     "orgs",
		Aliases: []string{"org"},
		Short:   "List, create, show and change orgs and their plans (operator API)",
		Long: `Orgs are the tenants: each has a plan (caps on its agents and on those
running at once; 0 is unlimited) and an optional default model. Uses the
operator token: $AGENTHOST_OPERATOR_TOKEN, else $AGENTHOST_TOKEN, or --token.
ORG is an org's ID or its name. Tenant tokens for an org: agenthost tokens
create --org ORG.`,
	}
	addNounFlags(cmd, f)
	cmd.AddCommand(orgsListCommand(f), orgsCreateCommand(f), orgsGetCommand(f), orgsUpdateCommand(f))
	return cmd
}

// orgID resolves an org's ID or name to its ID: an ID is used as it is, a
// name is looked up in the list (and must be unique).
func (c *apiClient) orgID(ctx context.Context, arg string) (string, error) {
	var o orgInfo
	_, err := c.do(ctx, http.MethodGet, "/orgs/"+url.PathEscape(arg), nil, &o)
	if err == nil || !isStatus(err, http.StatusNotFound) {
		return o.ID, err
	}
	var list struct {
		Orgs []orgInfo `json:"orgs"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/orgs", nil, &list); err != nil {
		return "", err
	}
	var ids []string
	for _, o := range list.Orgs {
		if o.Name == arg {
			ids = append(ids, o.ID)
		}
	}
	switch len(ids) {
	case 0:
		return "", &exitError{code: exitNotFound, err: fmt.Errorf("org %q not found (by ID or name)", arg)}
	case 1:
		return ids[0], nil
	}
	return "", &exitError{code: exitConflict, err: fmt.Errorf("%d orgs are named %q: use an ID (%s)", len(ids), arg, strings.Join(ids, ", "))}
}

func planText(o orgInfo) string {
	limit := func(n int) string {
		if n == 0 {
			return "unlimited"
		}
		return fmt.Sprint(n)
	}
	return fmt.Sprintf("%s agents, %s running", limit(o.Plan.MaxAgents), limit(o.Plan.MaxRunning))
}

func orgsListCommand(f *cliFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List orgs with their plans and usage",
		Args:    argCount(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var list struct {
				Orgs []orgInfo `json:"orgs"`
			}
			raw, err := c.do(cmd.Context(), http.MethodGet, "/orgs", nil, &list)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			tw := newTable(cmd.OutOrStdout(), "ID", "NAME", "AGENTS", "RUNNING", "MAX AGENTS", "MAX RUNNING", "DEFAULT MODEL", "CREATED")
			now := time.Now()
			for _, o := range list.Orgs {
				agents, running := "-", "-"
				if o.Usage != nil {
					agents, running = fmt.Sprint(o.Usage.Agents), fmt.Sprint(o.Usage.Running)
				}
				row(tw, o.ID, o.Name, agents, running, capText(o.Plan.MaxAgents), capText(o.Plan.MaxRunning),
					orDash(deref(o.DefaultModel)), ago(o.CreatedAt, now))
			}
			return tw.Flush()
		},
	}
}

func capText(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// orgFlags are the fields create and update send.
type orgFlags struct {
	name, defaultModel    string
	maxAgents, maxRunning int
}

func (o *orgFlags) add(cmd *cobra.Command, withName bool) {
	if withName {
		cmd.Flags().StringVar(&o.name, "name", "", "new name")
	}
	cmd.Flags().IntVar(&o.maxAgents, "max-agents", 0, "cap on the org's agents (0: unlimited)")
	cmd.Flags().IntVar(&o.maxRunning, "max-running", 0, "cap on the org's agents running at once (0: unlimited)")
	cmd.Flags().StringVar(&o.defaultModel, "default-model", "", `model for agents created without one ("" with update: none)`)
}

func printOrg(cmd *cobra.Command, f *cliFlags, raw []byte, o orgInfo) error {
	out := cmd.OutOrStdout()
	if f.json {
		return printJSON(out, raw)
	}
	tw := newTable(out)
	row(tw, "ID", o.ID)
	row(tw, "NAME", o.Name)
	row(tw, "PLAN", planText(o))
	if o.Usage != nil {
		row(tw, "USAGE", fmt.Sprintf("%d agents, %d running", o.Usage.Agents, o.Usage.Running))
	}
	row(tw, "DEFAULT MODEL", orDash(deref(o.DefaultModel)))
	row(tw, "CREATED", o.CreatedAt)
	return tw.Flush()
}

func orgsCreateCommand(f *cliFlags) *cobra.Command {
	var of orgFlags
	cmd := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create an org with its plan",
		Example: `  agenthost orgs create acme --max-agents 50 --max-running 10`,
		Args:    argCount(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			body := map[string]any{"name": a[0], "plan": map[string]int{"maxAgents": of.maxAgents, "maxRunning": of.maxRunning}}
			if of.defaultModel != "" {
				body["defaultModel"] = of.defaultModel
			}
			var o orgInfo
			raw, err := c.do(cmd.Context(), http.MethodPost, "/orgs", body, &o)
			if err != nil {
				return err
			}
			return printOrg(cmd, f, raw, o)
		},
	}
	of.add(cmd, false)
	return cmd
}

func orgsGetCommand(f *cliFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get ORG",
		Short: "Show an org: plan, usage, default model",
		Args:  argCount(1, 1, "ORG"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			id, err := c.orgID(cmd.Context(), a[0])
			if err != nil {
				return err
			}
			var o orgInfo
			raw, err := c.do(cmd.Context(), http.MethodGet, "/orgs/"+url.PathEscape(id), nil, &o)
			if err != nil {
				return err
			}
			return printOrg(cmd, f, raw, o)
		},
	}
}

func orgsUpdateCommand(f *cliFlags) *cobra.Command {
	var of orgFlags
	cmd := &cobra.Command{
		Use:   "update ORG",
		Short: "Rename an org, change its plan or its default model",
		Long: `Change what the flags name and nothing else. A plan is changed as a whole:
giving --max-agents or --max-running keeps the other cap as it is.`,
		Example: `  agenthost orgs update acme --max-running 20
  agenthost orgs update acme --default-model anthropic/claude-sonnet-4-6`,
		Args: argCount(1, 1, "ORG"),
		RunE: func(cmd *cobra.Command, a []string) error {
			body := map[string]any{}
			if changed(cmd, "name") {
				body["name"] = of.name
			}
			if changed(cmd, "default-model") {
				body["defaultModel"] = of.defaultModel
			}
			planChanged := changed(cmd, "max-agents") || changed(cmd, "max-running")
			if len(body) == 0 && !planChanged {
				return usageError(errors.New("nothing to change: give --name, --max-agents, --max-running or --default-model"))
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			id, err := c.orgID(cmd.Context(), a[0])
			if err != nil {
				return err
			}
			if planChanged {
				var cur orgInfo
				if _, err := c.do(cmd.Context(), http.MethodGet, "/orgs/"+url.PathEscape(id), nil, &cur); err != nil {
					return err
				}
				plan := map[string]int{"maxAgents": cur.Plan.MaxAgents, "maxRunning": cur.Plan.MaxRunning}
				if changed(cmd, "max-agents") {
					plan["maxAgents"] = of.maxAgents
				}
				if changed(cmd, "max-running") {
					plan["maxRunning"] = of.maxRunning
				}
				body["plan"] = plan
			}
			var o orgInfo
			raw, err := c.do(cmd.Context(), http.MethodPatch, "/orgs/"+url.PathEscape(id), body, &o)
			if err != nil {
				return err
			}
			return printOrg(cmd, f, raw, o)
		},
	}
	of.add(cmd, true)
	return cmd
}
