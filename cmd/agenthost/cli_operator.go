package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/agenthost/agenthost/store"
)

// `agenthost operator …`: the control plane — its Raft servers and backups
// of the whole state — through the operator API.

func newOperatorCommand() *cobra.Command {
	f := &cliFlags{operator: true}
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "The control plane: Raft servers, backups and restores; sign-up, invitations, accounts (operator API)",
		Long: `The control plane: list, add and remove Raft servers; save, inspect and
restore backups of the whole state; who may sign up to the dashboard, the
invitations and the accounts. Uses the operator token:
$AGENTHOST_OPERATOR_TOKEN, else $AGENTHOST_TOKEN, or --token. Adding and
removing servers and restoring are the leader's to do: point --addr at the
edge proxy (it sends them to the leader) or at the leader's API.`,
	}
	addNounFlags(cmd, f)
	raft := &cobra.Command{Use: "raft", Short: "List, add and remove the control plane's Raft servers"}
	raft.Args = cmd.Args
	raft.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	raft.AddCommand(raftListCommand(f), raftAddCommand(f), raftRemoveCommand(f))
	snap := &cobra.Command{Use: "snapshot", Short: "Save, inspect and restore backups of the whole state"}
	snap.Args = cmd.Args
	snap.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	snap.AddCommand(snapshotSaveCommand(f), snapshotInspectCommand(f), snapshotRestoreCommand(f))
	cmd.AddCommand(raft, snap, operatorSignupCommand(f), operatorInvitationsCommand(f), operatorAccountsCommand(f))
	return cmd
}

type raftInfo struct {
	ServerID string `json:"serverId"`
	LeaderID string `json:"leaderId"`
	Servers  []struct {
		ID      string `json:"id"`
		Address string `json:"address"`
		Voter   bool   `json:"voter"`
		Leader  bool   `json:"leader"`
	} `json:"servers"`
	State    store.StateDigest  `json:"state"`
	Restored *store.StateDigest `json:"restored"`
}

// printRaft shows the servers, or the API's JSON.
func printRaft(cmd *cobra.Command, f *cliFlags, raw []byte) error {
	if f.json {
		return printJSON(cmd.OutOrStdout(), raw)
	}
	var v raftInfo
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	tw := newTable(cmd.OutOrStdout(), "ID", "ADDRESS", "ROLE")
	for _, s := range v.Servers {
		role := "follower"
		switch {
		case s.Leader:
			role = "leader"
		case !s.Voter:
			role = "non-voter"
		}
		row(tw, s.ID, s.Address, role)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The answering server's own state, to compare servers (same index,
	// same hash) and a restore with its backup (docs/operations.md).
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "\nstate of %s: index %d, hash %s\n", v.ServerID, v.State.Index, v.State.Hash)
	if v.Restored != nil {
		fmt.Fprintf(out, "last snapshot installed: index %d, hash %s\n", v.Restored.Index, v.Restored.Hash)
	}
	return nil
}

func raftListCommand(f *cliFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the Raft servers and which one leads",
		Args:    argCount(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			raw, err := c.do(cmd.Context(), http.MethodGet, "/operator/raft", nil, nil)
			if err != nil {
				return err
			}
			return printRaft(cmd, f, raw)
		},
	}
}

func raftAddCommand(f *cliFlags) *cobra.Command {
	var nonVoter bool
	cmd := &cobra.Command{
		Use:   "add ID ADDRESS",
		Short: "Add a server (started with agenthost server) to the Raft configuration",
		Long: `Add a control server to the Raft configuration: ID is its --server-id,
ADDRESS its cluster address (host:port). A server started with --join adds
itself; this is for the rest.`,
		Args: argCount(2, 2, "ID ADDRESS"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			raw, err := c.do(cmd.Context(), http.MethodPost, "/operator/raft/servers", map[string]any{"id": a[0], "address": a[1], "voter": !nonVoter}, nil)
			if err != nil {
				return err
			}
			return printRaft(cmd, f, raw)
		},
	}
	cmd.Flags().BoolVar(&nonVoter, "non-voter", false, "add it as a non-voter: it replicates but does not vote")
	return cmd
}

func raftRemoveCommand(f *cliFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "remove ID",
		Aliases: []string{"rm"},
		Short:   "Remove a server from the Raft configuration for good (a dead one, or one retired)",
		Args:    argCount(1, 1, "ID"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			raw, err := c.do(cmd.Context(), http.MethodDelete, "/operator/raft/servers/"+url.PathEscape(a[0]), nil, nil)
			if err != nil {
				return err
			}
			return printRaft(cmd, f, raw)
		},
	}
}

func snapshotSaveCommand(f *cliFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent backup of the whole state to FILE (checked before it is kept)",
		Long: `Save a backup of the whole state — orgs, tokens (hashed), agents, scopes,
sealed secrets, nodes — as of a read index: every write acknowledged before
it is in it. It is written to FILE.partial, checked whole (checksum), then
renamed to FILE. Secrets stay sealed: a restore needs the same key file.`,
		Args: argCount(1, 1, "FILE"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			res, err := c.send(cmd.Context(), http.MethodGet, "/operator/snapshot", nil)
			if err != nil {
				return err
			}
			defer res.Body.Close()
			if res.StatusCode >= 300 {
				b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
				return responseError(res, b)
			}
			partial := a[0] + ".partial"
			out, err := os.OpenFile(partial, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, res.Body)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(partial)
				return &exitError{code: exitUnavailable, err: fmt.Errorf("the backup broke off: %w", err)}
			}
			info, err := inspectFile(partial)
			if err != nil {
				os.Remove(partial)
				return err
			}
			if err := os.Rename(partial, a[0]); err != nil {
				return err
			}
			return printSnapshotInfo(cmd, f, a[0], info)
		},
	}
}

func snapshotInspectCommand(f *cliFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "Check a backup whole and show its index, size and state hash (offline)",
		Args:  argCount(1, 1, "FILE"),
		RunE: func(cmd *cobra.Command, a []string) error {
			info, err := inspectFile(a[0])
			if err != nil {
				return err
			}
			return printSnapshotInfo(cmd, f, a[0], info)
		},
	}
}

func snapshotRestoreCommand(f *cliFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the whole cluster's state with a backup",
		Long: `Replace the whole cluster's state with a backup (checked here first, and by
the leader again before anything changes). The cluster's servers stay as
they are, so a backup restores into a fresh cluster. Afterwards the tokens
are the backup's: the operator token used must be in it for what follows.`,
		Args: argCount(1, 1, "FILE"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if _, err := inspectFile(a[0]); err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			file, err := os.Open(a[0])
			if err != nil {
				return err
			}
			defer file.Close()
			res, err := c.sendRaw(cmd.Context(), http.MethodPost, "/operator/snapshot", "application/octet-stream", file)
			if err != nil {
				return err
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
			if res.StatusCode >= 300 {
				return responseError(res, b)
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), b)
			}
			var info store.SnapshotInfo
			if err := json.Unmarshal(b, &info); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s: index %d, state %s\n", filepath.Base(a[0]), info.Index, info.Hash)
			return nil
		},
	}
}

// inspectFile checks a backup whole; a damaged one exits 1 with why.
func inspectFile(path string) (store.SnapshotInfo, error) {
	file, err := os.Open(path)
	if err != nil {
		return store.SnapshotInfo{}, err
	}
	defer file.Close()
	info, err := store.InspectSnapshot(file)
	if errors.Is(err, store.ErrSnapshotInvalid) {
		return info, fmt.Errorf("%s is not a whole agenthost backup: %w", path, err)
	}
	return info, err
}

func printSnapshotInfo(cmd *cobra.Command, f *cliFlags, path string, info store.SnapshotInfo) error {
	if f.json {
		b, err := json.Marshal(info)
		if err != nil {
			return err
		}
		return printJSON(cmd.OutOrStdout(), b)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: index %d, %d bytes, state %s\n", path, info.Index, info.Size, info.Hash)
	return nil
}
