package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// newBootstrapCommand is `agenthost server bootstrap`: it asks a running
// control node, on this host, for the cluster's first operator token. It
// works once per cluster; the token is printed and nowhere else kept.
func newBootstrapCommand() *cobra.Command {
	var httpAddr, label string
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Make the cluster's first operator token (works once)",
		Long: `Make the cluster's first operator token. Run it on a control node's host
once the cluster has formed: the server answers only on loopback and only
while no operator token exists, so it works exactly once per cluster. The
token is printed once; the cluster keeps only its hash.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := strings.NewReader(fmt.Sprintf(`{"label":%q}`, label))
			c := &http.Client{Timeout: 30 * time.Second}
			res, err := c.Post("http://"+httpAddr+"/api/v1/operator/bootstrap", "application/json", body)
			if err != nil {
				return fmt.Errorf("reach the server at %s: %w", httpAddr, err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
			var out struct {
				Token string `json:"token"`
				ID    string `json:"id"`
				Error struct {
					Message string `json:"message"`
				} `json:"error"`
			}
			json.Unmarshal(b, &out)
			if res.StatusCode != http.StatusCreated {
				msg := out.Error.Message
				if msg == "" {
					msg = strings.TrimSpace(string(b))
				}
				return &exitError{code: 2, err: fmt.Errorf("bootstrap refused (%s): %s", res.Status, msg)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Operator token (shown once; keep it safe):\n%s\n", out.Token)
			return nil
		},
	}
	cmd.Flags().StringVar(&httpAddr, "http-addr", "127.0.0.1:7480", "the local server's HTTP address")
	cmd.Flags().StringVar(&label, "label", "bootstrap", "a label for the token")
	return cmd
}
