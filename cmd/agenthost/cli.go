package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// The CLI verbs (agents, nodes, orgs, tokens) are clients of the REST API:
// this file holds what they share — where the API is and with which token,
// the HTTP calls, the mapping of the API's errors to exit codes, and the
// output helpers. docs/cli.md documents every verb and the exit codes.

// Exit codes of the CLI verbs. Scripts may switch on them; docs/cli.md
// lists them.
const (
	exitGeneric     = 1 // any other error: the API's 400 and 5xx not below, a local failure
	exitUsage       = 2 // unknown verb, bad flag or argument
	exitAuth        = 3 // no token, 401 or 403
	exitNotFound    = 4 // 404
	exitConflict    = 5 // 409 or 429: a conflict or a plan's limit
	exitUnavailable = 6 // 503, or the API cannot be reached: retry later
	exitTimeout     = 7 // a wait ran out of time, or the API's 504
	exitFailed      = 8 // the agent failed: ERROR while waiting, or the API's provisioning_failed
)

// defaultAddr is where `agenthost dev` and a server's --http-addr answer by
// default.
const defaultAddr = "http://127.0.0.1:7480"

// requestTimeout bounds one API call that is not a stream; the longest the
// API itself waits (create) is 60 s.
const requestTimeout = 2 * time.Minute

// cliFlags are the flags every noun has.
type cliFlags struct {
	addr, token string
	json        bool
	// poll is how often waits ask the API again (hidden; tests shorten it).
	poll time.Duration
	// operator nouns read AGENTHOST_OPERATOR_TOKEN before AGENTHOST_TOKEN.
	operator bool
}

// addNounFlags gives a noun the shared flags (inherited by its verbs), and
// makes flag errors usage errors (exit 2).
func addNounFlags(cmd *cobra.Command, f *cliFlags) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.addr, "addr", "", "API base URL (default $AGENTHOST_ADDR, else "+defaultAddr+")")
	tokenHelp := "API token (default $AGENTHOST_TOKEN)"
	if f.operator {
		tokenHelp = "operator token (default $AGENTHOST_OPERATOR_TOKEN, else $AGENTHOST_TOKEN)"
	}
	pf.StringVar(&f.token, "token", "", tokenHelp)
	pf.BoolVar(&f.json, "json", false, "print the API's JSON instead of tables")
	pf.DurationVar(&f.poll, "poll-interval", 500*time.Millisecond, "how often waits poll the API")
	pf.MarkHidden("poll-interval")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	// A noun alone shows its verbs; an unknown verb is a usage error.
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown verb %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return usageError(errors.New(msg))
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
}

// client resolves the address and token: flags, then the environment.
func (f *cliFlags) client() (*apiClient, error) {
	addr := f.addr
	if addr == "" {
		addr = os.Getenv("AGENTHOST_ADDR")
	}
	if addr == "" {
		addr = defaultAddr
	}
	base, err := normalizeAddr(addr)
	if err != nil {
		return nil, usageError(err)
	}
	token := f.token
	if token == "" && f.operator {
		token = os.Getenv("AGENTHOST_OPERATOR_TOKEN")
	}
	if token == "" {
		token = os.Getenv("AGENTHOST_TOKEN")
	}
	if token == "" {
		hint := "set AGENTHOST_TOKEN or pass --token"
		if f.operator {
			hint = "set AGENTHOST_OPERATOR_TOKEN or pass --token"
		}
		return nil, &exitError{code: exitAuth, err: fmt.Errorf("no API token: %s (for agenthost dev: source ~/.agenthost/dev/tokens.env)", hint)}
	}
	poll := f.poll
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	return &apiClient{base: base, token: token, http: &http.Client{}, poll: poll}, nil
}

// normalizeAddr turns "host:port", "http://host:port/" or
// "http://host:port/api/v1" into "http://host:port".
func normalizeAddr(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("API address %q: want http(s)://host:port", addr)
	}
	path := strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/api/v1")
	return u.Scheme + "://" + u.Host + strings.TrimSuffix(path, "/"), nil
}

// apiClient calls the REST API with one token.
type apiClient struct {
	base  string // scheme://host[:port], without /api/v1
	token string
	http  *http.Client
	poll  time.Duration
}

// apiError is an error answer of the API: {"error": {"code", "message",
// "requestId"}} with its status.
type apiError struct {
	Status    int
	Code      string
	Message   string
	RequestID string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code)
}

// exitCode is the one place where the API's answers map to exit codes.
func (e *apiError) exitCode() int {
	switch {
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return exitAuth
	case e.Status == http.StatusNotFound:
		return exitNotFound
	case e.Status == http.StatusConflict || e.Status == http.StatusTooManyRequests:
		return exitConflict
	case e.Status == http.StatusServiceUnavailable:
		return exitUnavailable
	case e.Status == http.StatusGatewayTimeout || e.Code == "timeout":
		return exitTimeout
	case e.Code == "provisioning_failed":
		return exitFailed
	}
	return exitGeneric
}

// usageError makes err exit with the usage code.
func usageError(err error) error {
	return &exitError{code: exitUsage, err: fmt.Errorf("%w (see --help)", err)}
}

// do sends one request and returns the answer's body; a JSON body, when
// given, is marshalled, and out, when given, is decoded from a success.
// Errors carry their exit code.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	res, err := c.send(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, &exitError{code: exitUnavailable, err: fmt.Errorf("%s %s: reading the answer: %w", method, path, err)}
	}
	if res.StatusCode >= 300 {
		return nil, responseError(res, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return nil, fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
		}
	}
	return b, nil
}

// send makes the request with body, when not nil, as JSON; the caller
// closes the answer's body.
func (c *apiClient) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	if body == nil {
		return c.sendRaw(ctx, method, path, "", nil)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return c.sendRaw(ctx, method, path, "application/json", bytes.NewReader(b))
}

// sendRaw makes the request with body of contentType (none when empty).
func (c *apiClient) sendRaw(ctx context.Context, method, path, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+"/api/v1"+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", "agenthost-cli/"+version)
	res, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, &exitError{code: exitTimeout, err: fmt.Errorf("%s %s: no answer within %s", method, path, requestTimeout)}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &exitError{code: exitUnavailable, err: fmt.Errorf("cannot reach the API at %s: %w", c.base, err)}
	}
	return res, nil
}

// responseError reads the API's error body; a body that is not the API's
// (a proxy's page, say) is shown as it is, shortened.
func responseError(res *http.Response, b []byte) error {
	var body struct {
		Error struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"requestId"`
		} `json:"error"`
	}
	e := &apiError{Status: res.StatusCode}
	if json.Unmarshal(b, &body) == nil && body.Error.Message != "" {
		e.Code, e.Message, e.RequestID = body.Error.Code, body.Error.Message, body.Error.RequestID
	} else {
		e.Code = strings.ToLower(strings.ReplaceAll(http.StatusText(res.StatusCode), " ", "_"))
		e.Message = strings.TrimSpace(string(b))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "…"
		}
		if e.Message == "" {
			e.Message = res.Status
		}
	}
	return &exitError{code: e.exitCode(), err: e}
}

// isStatus reports whether err is the API's answer with this status.
func isStatus(err error, status int) bool {
	var e *apiError
	return errors.As(err, &e) && e.Status == status
}

// printJSON writes an answer of the API, indented.
func printJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		buf.Reset()
		buf.Write(raw)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// newTable is an aligned table; Flush it when done.
func newTable(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(header) > 0 {
		fmt.Fprintln(tw, strings.Join(header, "\t"))
	}
	return tw
}

// row writes one line of a table.
func row(tw *tabwriter.Writer, cells ...string) {
	for i, c := range cells {
		// A tab or newline in a value would break the columns.
		cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

// orDash shows an empty value as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago is a timestamp of the API (RFC 3339) shown as its age.
func ago(ts string, now time.Time) string {
	t, err := time.Parse(time.RFC3339, ts)
	if err != nil {
		return orDash(ts)
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return t.Local().Format("2006-01-02 15:04")
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// argCount checks the number of positional arguments: a usage error otherwise.
func argCount(min, max int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) < min || (max >= 0 && len(a) > max) {
			return usageError(fmt.Errorf("%s: want %s, got %d argument(s)", cmd.CommandPath(), names, len(a)))
		}
		return nil
	}
}

// changed reports whether a flag was given on the command line.
func changed(cmd *cobra.Command, name string) bool {
	f := cmd.Flags().Lookup(name)
	return f != nil && f.Changed
}
