package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/agenthost/agenthost/internal/keyring"
)

// newKeysCommand is `agenthost server keys`: the key-encryption keys that
// seal secrets and agents' runtime passwords. They live in a file on every control server, outside Raft;
// rotating one is four steps (docs/operations.md): rotate the file, copy it
// to every server and reload them (SIGHUP), reseal, retire the old key.
func newKeysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Rotate the keys that seal secrets and runtime passwords",
		Long: `Rotate the key-encryption keys that seal secrets and agents' runtime passwords.

  1. agenthost server keys rotate --secrets-key-file F   (adds a new key first in F)
  2. copy F to every control server, then reload each:  systemctl reload agenthost-server
     (or kill -HUP); from then on new secrets are sealed under the new key
  3. agenthost server keys reseal                        (re-seals every stored secret
                                                          and agent runtime password)
  4. agenthost server keys retire --secrets-key-file F --id OLD, copy F again, reload

A server refuses to reload a key file that lacks a key some secret or runtime
password is still sealed under.`,
	}
	var keyFile, id string
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Put a new key first in the key file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				id = "k" + time.Now().UTC().Format("20060102T150405")
			}
			if err := keyring.Rotate(keyFile, id); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s now starts with key %s. Copy it to every control server and reload them (SIGHUP), then run `agenthost server keys reseal`.\n", keyFile, id)
			return nil
		},
	}
	retire := &cobra.Command{
		Use:   "retire",
		Short: "Remove an old key from the key file once nothing is sealed under it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				return fmt.Errorf("--id names the key to retire")
			}
			if err := keyring.Retire(keyFile, id); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key %s removed from %s. Copy it to every control server and reload them.\n", id, keyFile)
			return nil
		},
	}
	for _, c := range []*cobra.Command{rotate, retire} {
		c.Flags().StringVar(&keyFile, "secrets-key-file", os.Getenv(keyring.EnvKeyFile), "the key file (env "+keyring.EnvKeyFile+")")
		c.Flags().StringVar(&id, "id", "", "the key's ID (rotate: default k<UTC time>)")
	}

	var addr, token string
	call := func(cmd *cobra.Command, method, path string) error {
		if token == "" {
			return fmt.Errorf("an operator token is needed: --token or AGENTHOST_OPERATOR_TOKEN")
		}
		base := addr
		if !strings.Contains(base, "://") {
			base = "http://" + base
		}
		req, err := http.NewRequestWithContext(cmd.Context(), method, strings.TrimRight(base, "/")+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := (&http.Client{Timeout: 10 * time.Minute}).Do(req)
		if err != nil {
			return fmt.Errorf("reach the server at %s: %w", addr, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		if res.StatusCode != http.StatusOK {
			return &exitError{code: 1, err: fmt.Errorf("%s: %s", res.Status, strings.TrimSpace(string(b)))}
		}
		var v struct {
			CurrentKeyID          string         `json:"currentKeyId"`
			SecretsByKey          map[string]int `json:"secretsByKey"`
			RuntimePasswordsByKey map[string]int `json:"runtimePasswordsByKey"`
			Resealed              *int           `json:"resealed"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("unexpected answer: %s", b)
		}
		out := cmd.OutOrStdout()
		if v.Resealed != nil {
			fmt.Fprintf(out, "re-sealed %d secrets and runtime passwords\n", *v.Resealed)
		}
		fmt.Fprintf(out, "sealing key: %s\n", v.CurrentKeyID)
		keys := map[string]bool{}
		for _, byKey := range []map[string]int{v.SecretsByKey, v.RuntimePasswordsByKey} {
			for k := range byKey {
				keys[k] = true
			}
		}
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			fmt.Fprintf(out, "  %s seals %d secrets and %d agents' runtime passwords\n", k, v.SecretsByKey[k], v.RuntimePasswordsByKey[k])
		}
		return nil
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Show which keys seal the stored secrets and runtime passwords",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return call(cmd, "GET", "/api/v1/operator/secrets/keys") },
	}
	reseal := &cobra.Command{
		Use:   "reseal",
		Short: "Re-seal every secret and runtime password under the current key (after every server reloaded the key file)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(cmd, "POST", "/api/v1/operator/secrets/reseal")
		},
	}
	for _, c := range []*cobra.Command{show, reseal} {
		c.Flags().StringVar(&addr, "addr", envOr("AGENTHOST_ADDR", "127.0.0.1:7480"), "a control server's HTTP address (env AGENTHOST_ADDR)")
		c.Flags().StringVar(&token, "token", os.Getenv("AGENTHOST_OPERATOR_TOKEN"), "an operator token (env AGENTHOST_OPERATOR_TOKEN)")
	}
	cmd.AddCommand(rotate, retire, show, reseal)
	return cmd
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
