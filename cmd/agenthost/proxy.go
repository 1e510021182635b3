package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/agenthost/agenthost/proxy"
)

// proxyOptions are the flags of `agenthost proxy`.
type proxyOptions struct {
	domain      string
	control     []string
	api         []string
	httpAddr    string
	httpsAddr   string
	certFile    string
	keyFile     string
	metricsAddr string
	accessLog   bool
	rings       int
	// registry, when set, receives the proxy's metrics and nothing serves
	// them here (dev serves them with the control node's).
	registry *prometheus.Registry
}

func newProxyCommand() *cobra.Command {
	opts := proxyOptions{}
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run an edge proxy: agent subdomains to their nodes, /api/ to control servers",
		Long: `Run an edge proxy.

  a<port>.<domain>, <agentId>.<domain>   the agent's own server (its web UI), on the node that hosts it
  <domain>/api/…, api.<domain>/api/…     the REST API, on a control server

The routing table streams from the control servers and is held in memory.
Point a wildcard DNS record (*.<domain>) and the apex at the proxy; for HTTPS
give a wildcard certificate.`,
		Example: `  agenthost proxy --domain agents.example.com --control 10.0.0.1:7400,10.0.0.2:7400 \
    --api 10.0.0.1:7480,10.0.0.2:7480 --https-addr :443 --tls-cert wildcard.pem --tls-key wildcard.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Getenv("GOGC") == "" {
				// The proxy's heap is small and short-lived (requests in
				// flight, the routing table): collecting a quarter as often
				// buys it about a quarter more requests per second.
				debug.SetGCPercent(400)
			}
			return runProxy(cmd.Context(), opts, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.domain, "domain", "localhost", "base domain: agents are a<port>.<domain> and <agentId>.<domain>")
	f.StringSliceVar(&opts.control, "control", []string{"127.0.0.1:7400"}, "control servers' cluster addresses (route stream)")
	f.StringSliceVar(&opts.api, "api", []string{"127.0.0.1:7480"}, "control servers' HTTP addresses (REST API)")
	f.StringVar(&opts.httpAddr, "http-addr", "127.0.0.1:8080", "plain HTTP address to listen on (empty: none)")
	f.StringVar(&opts.httpsAddr, "https-addr", "", "HTTPS address to listen on (needs --tls-cert and --tls-key)")
	f.StringVar(&opts.certFile, "tls-cert", "", "certificate file (PEM; a wildcard for *.<domain> and the apex)")
	f.StringVar(&opts.keyFile, "tls-key", "", "private key file (PEM)")
	f.StringVar(&opts.metricsAddr, "metrics-addr", "127.0.0.1:7491", "address for /metrics (empty: none)")
	f.BoolVar(&opts.accessLog, "access-log", true, "log a line per request")
	f.IntVar(&opts.rings, "io-uring-loops", proxy.DefaultConfig().Rings,
		"io_uring loops serving plain HTTP/1.1 agent requests (0: a goroutine per connection; where the kernel refuses io_uring, goroutines serve)")
	return cmd
}

// runProxy runs the proxy until ctx ends; ready, when not nil, gets the
// addresses it listens on.
func runProxy(ctx context.Context, opts proxyOptions, ready func(httpAddr, httpsAddr string)) error {
	logger := slog.Default()
	reg := opts.registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	cfg := proxy.DefaultConfig()
	cfg.Domain, cfg.ControlAddrs, cfg.APIAddrs = opts.domain, opts.control, opts.api
	cfg.Logger, cfg.Registerer, cfg.AccessLog, cfg.Rings = logger, reg, opts.accessLog, opts.rings
	p, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	go p.Run(ctx)
	if opts.httpAddr == "" && opts.httpsAddr == "" {
		return errors.New("give --http-addr, --https-addr or both")
	}
	var servers []*http.Server
	serve := func(addr string, tlsConfig *tls.Config) (string, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return "", fmt.Errorf("listen on %s: %w", addr, err)
		}
		srv := p.NewServer()
		srv.TLSConfig = tlsConfig
		servers = append(servers, srv)
		if tlsConfig != nil {
			go srv.ServeTLS(ln, "", "")
		} else {
			// Plain HTTP/1.1 clients get the fast path (proxy.FastListener);
			// over TLS, browsers speak HTTP/2, which net/http serves.
			go srv.Serve(p.FastListener(ln, srv))
		}
		return ln.Addr().String(), nil
	}
	var httpAddr, httpsAddr string
	if opts.httpAddr != "" {
		if httpAddr, err = serve(opts.httpAddr, nil); err != nil {
			return err
		}
	}
	if opts.httpsAddr != "" {
		cert, err := tls.LoadX509KeyPair(opts.certFile, opts.keyFile)
		if err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
		if httpsAddr, err = serve(opts.httpsAddr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}); err != nil {
			return err
		}
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	if opts.metricsAddr != "" && opts.registry == nil {
		stop, err := serveMetrics(opts.metricsAddr, reg)
		if err != nil {
			return err
		}
		defer stop()
	}
	logger.Info("proxy started", "domain", opts.domain, "http_addr", httpAddr, "https_addr", httpsAddr)
	if ready != nil {
		ready(httpAddr, httpsAddr)
	}
	<-ctx.Done()
	return nil
}

// serveMetrics serves reg at /metrics on addr until stop is called.
func serveMetrics(addr string, reg *prometheus.Registry) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}
