package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Dashboard accounts from the command line: `agenthost invitations …` (a
// tenant's, into its own org), and `agenthost operator signup`,
// `operator invitations …` and `operator accounts …` (the operator API).

type invitationInfo struct {
	ID        string  `json:"id"`
	OrgID     *string `json:"orgId"`
	Email     *string `json:"email"`
	Operator  bool    `json:"operator"`
	CreatedAt string  `json:"createdAt"`
	ExpiresAt string  `json:"expiresAt"`
	Code      string  `json:"code"`
	SignupURL string  `json:"signupUrl"`
}

func newInvitationsCommand() *cobra.Command {
	f := &cliFlags{}
	cmd := &cobra.Command{
		Use:     "invitations",
		Aliases: []string{"invitation", "invite"},
		Short:   "Invite people into your org's dashboard; list and withdraw invitations",
		Long: `Invite people into your org: an invitation is a single-use code (and a
sign-up link with it) that makes a dashboard account in your org. It is shown
once, when it is made; the cluster keeps only its hash. The cluster's
sign-up mode must not be closed (agenthost operator signup).`,
	}
	addNounFlags(cmd, f)
	cmd.AddCommand(invitationsListCommand(f, "/invitations"), invitationsCreateCommand(f, "/invitations", false), invitationsWithdrawCommand(f, "/invitations"))
	return cmd
}

func invitationsListCommand(f *cliFlags, path string) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List open invitations (never their codes)",
		Args:    argCount(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var list struct {
				Invitations []invitationInfo `json:"invitations"`
			}
			raw, err := c.do(cmd.Context(), http.MethodGet, path, nil, &list)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			tw := newTable(cmd.OutOrStdout(), "ID", "EMAIL", "ORG", "OPERATOR", "CREATED", "EXPIRES")
			now := time.Now()
			for _, inv := range list.Invitations {
				row(tw, inv.ID, orDash(deref(inv.Email)), orgOrOwn(inv.OrgID), yesNo(inv.Operator), ago(inv.CreatedAt, now), inv.ExpiresAt)
			}
			return tw.Flush()
		},
	}
}

func orgOrOwn(id *string) string {
	if id == nil {
		return "(its own)"
	}
	return *id
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// invitationsCreateCommand makes an invitation at path; operator adds the
// operator API's flags (--org, --operator).
func invitationsCreateCommand(f *cliFlags, path string, operator bool) *cobra.Command {
	var email, org string
	var asOperator, quiet bool
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Make an invitation; its code and sign-up link are printed this once",
		Args:  argCount(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			body := map[string]any{}
			if email != "" {
				body["email"] = email
			}
			if expires != 0 {
				if expires%time.Hour != 0 || expires < time.Hour {
					return usageError(errors.New("--expires is whole hours, at least 1h"))
				}
				body["expiresInHours"] = int(expires / time.Hour)
			}
			if org != "" {
				id, err := c.orgID(cmd.Context(), org)
				if err != nil {
					return err
				}
				body["orgId"] = id
			}
			if asOperator {
				body["operator"] = true
			}
			var inv invitationInfo
			raw, err := c.do(cmd.Context(), http.MethodPost, path, body, &inv)
			if err != nil {
				return err
			}
			return printCreated(cmd, f, raw, quiet, inv.SignupURL, "The code is shown this once and admits one sign-up; the cluster keeps only its hash.",
				"ID", inv.ID, "EMAIL", orDash(deref(inv.Email)), "ORG", orgOrOwn(inv.OrgID), "OPERATOR", yesNo(inv.Operator),
				"EXPIRES", inv.ExpiresAt, "CODE", inv.Code, "SIGN-UP LINK", inv.SignupURL)
		},
	}
	cmd.Flags().StringVar(&email, "email", "", "admit only this email address")
	cmd.Flags().DurationVar(&expires, "expires", 0, "how long it stays valid, in whole hours (default 168h, at most 720h)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the sign-up link")
	if operator {
		cmd.Flags().StringVar(&org, "org", "", "admit into this org (ID or name); without it the account gets an org of its own")
		cmd.Flags().BoolVar(&asOperator, "operator", false, "make the account an operator account")
		cmd.Example = `  agenthost operator invitations create --email ada@example.com --org acme
  agenthost operator invitations create --operator -q`
	} else {
		cmd.Example = `  agenthost invitations create --email bob@example.com`
	}
	return cmd
}

func invitationsWithdrawCommand(f *cliFlags, path string) *cobra.Command {
	return &cobra.Command{
		Use:     "withdraw INVITATION-ID…",
		Aliases: []string{"rm"},
		Short:   "Withdraw unused invitations by ID (as `list` shows them)",
		Args:    argCount(1, -1, "INVITATION-ID…"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			for _, id := range a {
				if _, err := c.do(cmd.Context(), http.MethodDelete, path+"/"+url.PathEscape(id), nil, nil); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), id, "withdrawn")
			}
			return nil
		},
	}
}

// Operator verbs, added to `agenthost operator`.

var signupModes = []string{"open", "invite", "closed"}

func operatorSignupCommand(f *cliFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "signup [open|invite|closed]",
		Short: "Show or set who may create a dashboard account",
		Long: `Show or set the cluster's sign-up mode: open (anyone, with an org of their
own on the self-serve plan), invite (only with an invitation: the default) or
closed (no one; operators make orgs and tokens).`,
		Args: argCount(0, 1, "[open|invite|closed]"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var cfg struct {
				Signup string `json:"signup"`
			}
			method, body := http.MethodGet, any(nil)
			if len(a) == 1 {
				if !slices.Contains(signupModes, a[0]) {
					return usageError(fmt.Errorf("%q: the mode is one of %s", a[0], strings.Join(signupModes, ", ")))
				}
				method, body = http.MethodPatch, map[string]string{"signup": a[0]}
			}
			raw, err := c.do(cmd.Context(), method, "/operator/config", body, &cfg)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "sign-up:", cfg.Signup)
			return nil
		},
	}
}

func operatorInvitationsCommand(f *cliFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "invitations",
		Aliases: []string{"invitation", "invite"},
		Short:   "Make, list and withdraw invitations: into any org, to an org of one's own, or for operators",
	}
	cmd.AddCommand(invitationsListCommand(f, "/operator/invitations"), invitationsCreateCommand(f, "/operator/invitations", true),
		invitationsWithdrawCommand(f, "/operator/invitations"))
	return cmd
}

type accountInfo struct {
	ID        string `json:"id"`
	Email     string `json:"email"`
	OrgID     string `json:"orgId"`
	OrgName   string `json:"orgName"`
	Operator  bool   `json:"operator"`
	CreatedAt string `json:"createdAt"`
}

func operatorAccountsCommand(f *cliFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "accounts",
		Aliases: []string{"account"},
		Short:   "List dashboard accounts; make them operators or not; remove them",
	}
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List every dashboard account with its org",
		Args:    argCount(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			accounts, raw, err := listAccounts(cmd, c)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			tw := newTable(cmd.OutOrStdout(), "ID", "EMAIL", "ORG", "OPERATOR", "CREATED")
			now := time.Now()
			for _, a := range accounts {
				row(tw, a.ID, a.Email, a.OrgName, yesNo(a.Operator), ago(a.CreatedAt, now))
			}
			return tw.Flush()
		},
	}
	setOperator := func(use, short string, operator bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " ACCOUNT",
			Short: short,
			Args:  argCount(1, 1, "ACCOUNT (ID or email)"),
			RunE: func(cmd *cobra.Command, a []string) error {
				c, err := f.client()
				if err != nil {
					return err
				}
				id, err := accountID(cmd, c, a[0])
				if err != nil {
					return err
				}
				var acc accountInfo
				raw, err := c.do(cmd.Context(), http.MethodPatch, "/operator/accounts/"+url.PathEscape(id), map[string]bool{"operator": operator}, &acc)
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(cmd.OutOrStdout(), raw)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s (%s) operator: %s\n", acc.ID, acc.Email, yesNo(acc.Operator))
				return nil
			},
		}
	}
	remove := &cobra.Command{
		Use:     "remove ACCOUNT…",
		Aliases: []string{"rm"},
		Short:   "Delete accounts (by ID or email) and sign them out everywhere; their orgs and agents stay",
		Args:    argCount(1, -1, "ACCOUNT… (ID or email)"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			for _, ref := range a {
				id, err := accountID(cmd, c, ref)
				if err != nil {
					return err
				}
				if _, err := c.do(cmd.Context(), http.MethodDelete, "/operator/accounts/"+url.PathEscape(id), nil, nil); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), id, "removed")
			}
			return nil
		},
	}
	cmd.AddCommand(list, setOperator("promote", "Make an account an operator account", true),
		setOperator("demote", "Make an operator account an ordinary one", false), remove)
	return cmd
}

func listAccounts(cmd *cobra.Command, c *apiClient) ([]accountInfo, []byte, error) {
	var list struct {
		Accounts []accountInfo `json:"accounts"`
	}
	raw, err := c.do(cmd.Context(), http.MethodGet, "/operator/accounts", nil, &list)
	return list.Accounts, raw, err
}

// accountID resolves an account given by email to its ID.
func accountID(cmd *cobra.Command, c *apiClient, ref string) (string, error) {
	if !strings.Contains(ref, "@") {
		return ref, nil
	}
	accounts, _, err := listAccounts(cmd, c)
	if err != nil {
		return "", err
	}
	for _, a := range accounts {
		if strings.EqualFold(a.Email, ref) {
			return a.ID, nil
		}
	}
	return "", &exitError{code: exitNotFound, err: fmt.Errorf("no account with email %q", ref)}
}

// printCreated prints what a create answered, shown this once: the API's
// JSON (--json), only the secret itself (-q), or the fields (name, value
// pairs) as a table with note on stderr.
func printCreated(cmd *cobra.Command, f *cliFlags, raw []byte, quiet bool, secret, note string, fields ...string) error {
	out := cmd.OutOrStdout()
	switch {
	case f.json:
		return printJSON(out, raw)
	case quiet:
		fmt.Fprintln(out, secret)
		return nil
	}
	tw := newTable(out)
	for i := 0; i+1 < len(fields); i += 2 {
		row(tw, fields[i], fields[i+1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(cmd.ErrOrStderr(), note)
	return nil
}
