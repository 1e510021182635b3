package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/agenthost/agenthost/store/clusterrpc"
)

func newDevCommand() *cobra.Command {
	opts := serverOptions{
		name:            "dev",
		bind:            "127.0.0.1:7400",
		httpAddr:        "127.0.0.1:7480",
		bootstrapExpect: 1,
	}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run agenthost on this machine: a single-node cluster in one process",
		Long: `Run the embedded single-machine cluster: a control node with a one-server
Raft, in one process. Its state lives in --data-dir and survives restarts.
The node agent and the edge proxy join this process as they are built.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServer(cmd.Context(), opts, func(httpAddr string, srv *clusterrpc.Server) {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "agenthost dev is running (Ctrl-C to stop)\n")
				fmt.Fprintf(out, "  data dir:      %s\n", opts.dataDir)
				fmt.Fprintf(out, "  cluster addr:  %s\n", srv.Addr())
				fmt.Fprintf(out, "  status:        http://%s/v1/status\n", httpAddr)
				fmt.Fprintf(out, "  metrics:       http://%s/metrics\n", httpAddr)
			})
		},
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	f := cmd.Flags()
	f.StringVar(&opts.dataDir, "data-dir", filepath.Join(home, ".agenthost", "dev"), "directory for the dev cluster's state")
	f.StringVar(&opts.bind, "bind", opts.bind, "cluster address to listen on")
	f.StringVar(&opts.httpAddr, "http-addr", opts.httpAddr, "HTTP address for /metrics and /v1/status")
	return cmd
}
