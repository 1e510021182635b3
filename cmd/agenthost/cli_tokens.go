package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

// `agenthost tokens …`: API tokens — the caller's own org's (tenant API),
// any org's (--org, operator API) or the operator tokens of no org
// (--operator).

type tokenInfo struct {
	ID         string  `json:"id"`
	OrgID      *string `json:"orgId"`
	Label      string  `json:"label"`
	Role       string  `json:"role"`
	Last4      string  `json:"last4"`
	CreatedAt  string  `json:"createdAt"`
	LastUsedAt *string `json:"lastUsedAt"`
	Token      string  `json:"token"`
}

// tokenScope says whose tokens a verb works on.
type tokenScope struct {
	org      string
	operator bool
}

func (s *tokenScope) add(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&s.org, "org", "", "an org's tokens, by ID or name (operator API)")
	cmd.PersistentFlags().BoolVar(&s.operator, "operator", false, "the operator tokens of no org (operator API)")
}

// client picks the token: the tenant's own for its org's tokens, the
// operator's for --org and --operator.
func (s *tokenScope) client(f *cliFlags) (*apiClient, error) {
	if s.org != "" && s.operator {
		return nil, usageError(errors.New("give --org or --operator, not both"))
	}
	g := *f
	g.operator = s.org != "" || s.operator
	return g.client()
}

// path is the collection's path.
func (s *tokenScope) path(ctx context.Context, c *apiClient) (string, error) {
	switch {
	case s.operator:
		return "/operator/tokens", nil
	case s.org != "":
		id, err := c.orgID(ctx, s.org)
		if err != nil {
			return "", err
		}
		return "/orgs/" + url.PathEscape(id) + "/tokens", nil
	}
	return "/tokens", nil
}

func newTokensCommand() *cobra.Command {
	f := &cliFlags{}
	var scope tokenScope
	cmd := &cobra.Command{
		Use:     "tokens",
		Aliases: []string{"token"},
		Short:   "List, create and revoke API tokens",
		Long: `List, create and revoke API tokens. Without flags: your own org's tenant
tokens, with $AGENTHOST_TOKEN. With --org ORG: that org's tokens; with
--operator: the operator tokens of no org — both with the operator token
($AGENTHOST_OPERATOR_TOKEN, else $AGENTHOST_TOKEN, or --token). A new token
is shown once, when it is created; the cluster keeps only its hash.`,
	}
	addNounFlags(cmd, f)
	cmd.PersistentFlags().Lookup("token").Usage = "API token (default $AGENTHOST_TOKEN; with --org or --operator, $AGENTHOST_OPERATOR_TOKEN first)"
	scope.add(cmd)
	cmd.AddCommand(tokensListCommand(f, &scope), tokensCreateCommand(f, &scope), tokensRevokeCommand(f, &scope))
	return cmd
}

func tokensListCommand(f *cliFlags, scope *tokenScope) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List tokens (never the tokens themselves: their last 4 characters)",
		Args:    argCount(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := scope.client(f)
			if err != nil {
				return err
			}
			path, err := scope.path(cmd.Context(), c)
			if err != nil {
				return err
			}
			var list struct {
				Tokens []tokenInfo `json:"tokens"`
			}
			raw, err := c.do(cmd.Context(), http.MethodGet, path, nil, &list)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			tw := newTable(cmd.OutOrStdout(), "ID", "LABEL", "ROLE", "LAST4", "CREATED", "LAST USED")
			now := time.Now()
			for _, t := range list.Tokens {
				lastUsed := "never"
				if t.LastUsedAt != nil {
					lastUsed = ago(*t.LastUsedAt, now)
				}
				row(tw, t.ID, orDash(t.Label), t.Role, "…"+t.Last4, ago(t.CreatedAt, now), lastUsed)
			}
			return tw.Flush()
		},
	}
}

func tokensCreateCommand(f *cliFlags, scope *tokenScope) *cobra.Command {
	var label, role string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a token; it is printed this once",
		Example: `  agenthost tokens create --label ci
  agenthost tokens create --org acme --label acme-admin
  export AGENTHOST_TOKEN=$(agenthost tokens create --org acme -q)`,
		Args: argCount(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role != "" && scope.org == "" {
				return usageError(errors.New("--role is for an org's tokens (--org)"))
			}
			c, err := scope.client(f)
			if err != nil {
				return err
			}
			path, err := scope.path(cmd.Context(), c)
			if err != nil {
				return err
			}
			body := map[string]string{"label": label}
			if role != "" {
				body["role"] = role
			}
			var t tokenInfo
			raw, err := c.do(cmd.Context(), http.MethodPost, path, body, &t)
			if err != nil {
				return err
			}
			return printCreated(cmd, f, raw, quiet, t.Token, "The token is shown this once; the cluster keeps only its hash.",
				"ID", t.ID, "ROLE", t.Role, "ORG", orDash(deref(t.OrgID)), "LABEL", orDash(t.Label), "TOKEN", t.Token)
		},
	}
	cmd.Flags().StringVar(&label, "label", "", "a label to tell the token apart")
	cmd.Flags().StringVar(&role, "role", "", `with --org: "tenant" (default) or "operator"`)
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the token")
	return cmd
}

func tokensRevokeCommand(f *cliFlags, scope *tokenScope) *cobra.Command {
	return &cobra.Command{
		Use:     "revoke TOKEN-ID…",
		Aliases: []string{"rm"},
		Short:   "Revoke tokens by ID (as `list` shows them)",
		Args:    argCount(1, -1, "TOKEN-ID…"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := scope.client(f)
			if err != nil {
				return err
			}
			path, err := scope.path(cmd.Context(), c)
			if err != nil {
				return err
			}
			for _, id := range a {
				raw, err := c.do(cmd.Context(), http.MethodDelete, path+"/"+url.PathEscape(id), nil, nil)
				if err != nil {
					return err
				}
				if f.json {
					if err := printJSON(cmd.OutOrStdout(), raw); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s revoked\n", id)
			}
			return nil
		},
	}
}
