package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// The agents verbs that talk to a running agent: send, messages, logs (its
// event stream), permissions and questions.

// message is one message of a session's history.
type message struct {
	ID   string `json:"id"`
	Info struct {
		Role  string            `json:"role"`
		Parts []json.RawMessage `json:"parts"`
		Time  *struct {
			Created   int64 `json:"created"`
			Completed int64 `json:"completed"`
		} `json:"time"`
		Tokens *struct {
			Total int64 `json:"total"`
		} `json:"tokens"`
		Error string `json:"error"`
	} `json:"info"`
}

// finished reports whether an assistant message is complete (or failed).
func (m message) finished() bool {
	return m.Info.Role == "assistant" && (m.Info.Error != "" || (m.Info.Time != nil && m.Info.Time.Completed != 0))
}

type usageInfo struct {
	Cost   float64 `json:"cost"`
	Tokens struct {
		Total int64 `json:"total"`
	} `json:"tokens"`
}

type sessionMessages struct {
	SessionID string    `json:"sessionId"`
	Title     *string   `json:"title"`
	Messages  []message `json:"messages"`
	Usage     usageInfo `json:"usage"`
}

// partLines renders a message's parts for people: text as it is, tool
// calls as one line each; steps, snapshots and the like are left out.
func partLines(parts []json.RawMessage) []string {
	var lines []string
	for _, raw := range parts {
		var p struct {
			Type  string `json:"type"`
			Text  string `json:"text"`
			Tool  string `json:"tool"`
			State struct {
				Status string `json:"status"`
				Output string `json:"output"`
				Error  string `json:"error"`
			} `json:"state"`
			Filename string `json:"filename"`
		}
		if json.Unmarshal(raw, &p) != nil {
			continue
		}
		switch p.Type {
		case "text":
			if t := strings.TrimSpace(p.Text); t != "" {
				lines = append(lines, strings.Split(t, "\n")...)
			}
		case "tool":
			line := fmt.Sprintf("[tool %s: %s]", p.Tool, p.State.Status)
			if p.State.Error != "" {
				line += " " + firstLine(p.State.Error)
			} else if p.State.Output != "" {
				line += " " + firstLine(p.State.Output)
			}
			lines = append(lines, line)
		case "file":
			lines = append(lines, "[file "+p.Filename+"]")
		}
	}
	return lines
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

// printMessages writes messages as "role: text" with continuation lines
// indented under the text.
func printMessages(w io.Writer, msgs []message) {
	for _, m := range msgs {
		lines := partLines(m.Info.Parts)
		if m.Info.Error != "" {
			lines = append(lines, "error: "+m.Info.Error)
		}
		if len(lines) == 0 {
			lines = []string{"(no text)"}
		}
		prefix := fmt.Sprintf("%-10s ", m.Info.Role+":")
		for i, l := range lines {
			if i > 0 {
				prefix = strings.Repeat(" ", len(prefix))
			}
			fmt.Fprintln(w, prefix+l)
		}
	}
}

func agentsMessagesCommand(f *cliFlags) *cobra.Command {
	var session string
	cmd := &cobra.Command{
		Use:   "messages AGENT",
		Short: "Show an agent's conversation: one session or all (the agent must be running)",
		Args:  argCount(1, 1, "AGENT"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			path := "/agents/" + url.PathEscape(a[0]) + "/messages"
			var sessions []sessionMessages
			var raw json.RawMessage
			if session != "" {
				var one sessionMessages
				raw, err = c.do(cmd.Context(), http.MethodGet, path+"?sessionId="+url.QueryEscape(session), nil, &one)
				sessions = append(sessions, one)
			} else {
				var all struct {
					Sessions []sessionMessages `json:"sessions"`
				}
				raw, err = c.do(cmd.Context(), http.MethodGet, path, nil, &all)
				sessions = all.Sessions
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.json {
				return printJSON(out, raw)
			}
			for i, s := range sessions {
				if i > 0 {
					fmt.Fprintln(out)
				}
				title := ""
				if s.Title != nil {
					title = fmt.Sprintf(" %q", *s.Title)
				}
				fmt.Fprintf(out, "session %s%s: %d messages, %d tokens, $%.4f\n", s.SessionID, title, len(s.Messages), s.Usage.Tokens.Total, s.Usage.Cost)
				printMessages(out, s.Messages)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&session, "session", "", "only this session")
	return cmd
}

func agentsSendCommand(f *cliFlags) *cobra.Command {
	var session string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "send AGENT MESSAGE…",
		Short: "Send a message (to a new session unless --session), optionally waiting for the reply",
		Long: `Send a message to a running agent. Without --session the API starts a new
session. The words after AGENT are the message; "-" reads it from stdin.

Without --wait the session's ID is printed (the API answers at once and the
agent works in the background). With --wait the CLI waits until the agent
has finished replying and prints the reply (--json: the session's messages as
GET /api/v1/agents/{id}/messages?sessionId= returns them). While it waits, a
permission or question the agent asks in the session is shown on stderr with
the command that answers it.`,
		Example: `  agenthost agents send ag2x… "Add a README" --wait
  sid=$(agenthost agents send ag2x… "Run the tests")
  git diff | agenthost agents send ag2x… - --session "$sid" --wait`,
		Args: argCount(2, -1, "AGENT MESSAGE…"),
		RunE: func(cmd *cobra.Command, a []string) error {
			text := strings.Join(a[1:], " ")
			if text == "-" {
				b, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return err
				}
				text = string(b)
			}
			if strings.TrimSpace(text) == "" {
				return usageError(errors.New("the message is empty"))
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			body := map[string]string{"message": text}
			if session != "" {
				body["sessionId"] = session
			}
			var sent struct {
				SessionID string `json:"sessionId"`
			}
			id := a[0]
			raw, err := c.do(cmd.Context(), http.MethodPost, "/agents/"+url.PathEscape(id)+"/messages", body, &sent)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !wait {
				if f.json {
					return printJSON(out, raw)
				}
				fmt.Fprintln(out, sent.SessionID)
				return nil
			}
			ctx, cancel := withOptionalTimeout(cmd.Context(), true, timeout)
			defer cancel()
			p := newProgress(cmd.ErrOrStderr(), f.json, id, time.Now)
			defer p.finish()
			p.note("%s: sent to session %s", id, sent.SessionID)
			reply, raw, err := c.waitReply(ctx, id, sent.SessionID, p)
			if err != nil {
				return err
			}
			p.finish()
			if f.json {
				return printJSON(out, raw)
			}
			printMessages(out, reply)
			return nil
		},
	}
	cmd.Flags().StringVar(&session, "session", "", "session to send to (default: a new one)")
	cmd.Flags().BoolVarP(&wait, "wait", "w", false, "wait for the reply and print it")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "with --wait: how long to wait (0: no limit)")
	return cmd
}

// waitReply waits until the agent is idle and the session's last message
// is a finished reply, and returns the messages after the last user
// message with the session's history as the API gave it. Permissions and
// questions asked in the session meanwhile are shown through p, once each.
func (c *apiClient) waitReply(ctx context.Context, id, session string, p *progress) ([]message, json.RawMessage, error) {
	var reply []message
	var raw json.RawMessage
	shown := map[string]bool{}
	polls := 0
	agentPath := "/agents/" + url.PathEscape(id)
	_, _, err := c.waitAgent(ctx, id, waitIdle, p, func(a agentInfo, idle bool) (bool, error) {
		if !idle {
			// A reply that waits on a person: say so, every few polls.
			if polls++; a.Status == "RUNNING" && polls%4 == 1 {
				c.showPending(ctx, id, session, shown, p)
			}
			return false, nil
		}
		var s sessionMessages
		b, err := c.do(ctx, http.MethodGet, agentPath+"/messages?sessionId="+url.QueryEscape(session), nil, &s)
		if err != nil {
			return false, err
		}
		n := len(s.Messages)
		if n == 0 || !s.Messages[n-1].finished() {
			return false, nil
		}
		start := n
		for start > 0 && s.Messages[start-1].Info.Role != "user" {
			start--
		}
		reply, raw = s.Messages[start:], b
		return true, nil
	})
	return reply, raw, err
}

// showPending shows the session's pending permissions and questions that
// were not shown yet, with the command that answers each. Errors are left
// to the next poll.
func (c *apiClient) showPending(ctx context.Context, id, session string, shown map[string]bool, p *progress) {
	var perms permissionList
	if _, err := c.do(ctx, http.MethodGet, "/agents/"+url.PathEscape(id)+"/permissions", nil, &perms); err == nil {
		for _, pm := range perms.Permissions {
			if pm.SessionID == session && !shown[pm.ID] {
				shown[pm.ID] = true
				p.note("%s asks permission %s: %s %s\n  answer: agenthost agents permissions reply %s %s --allow|--always|--deny",
					id, pm.ID, pm.Permission, strings.Join(pm.Patterns, " "), id, pm.ID)
			}
		}
	}
	var qs questionList
	if _, err := c.do(ctx, http.MethodGet, "/agents/"+url.PathEscape(id)+"/questions", nil, &qs); err == nil {
		for _, q := range qs.Questions {
			if q.SessionID == session && !shown[q.ID] {
				shown[q.ID] = true
				p.note("%s asks question %s (agenthost agents questions %s)\n  answer: agenthost agents questions reply %s %s --answer LABEL",
					id, q.ID, id, id, q.ID)
			}
		}
	}
}

type permissionList struct {
	Permissions []struct {
		ID         string   `json:"id"`
		SessionID  string   `json:"sessionID"`
		Permission string   `json:"permission"`
		Patterns   []string `json:"patterns"`
	} `json:"permissions"`
}

type questionList struct {
	Questions []struct {
		ID        string `json:"id"`
		SessionID string `json:"sessionID"`
		Questions []struct {
			Question    string `json:"question"`
			Header      string `json:"header"`
			MultiSelect bool   `json:"multiSelect"`
			Options     []struct {
				Label       string `json:"label"`
				Description string `json:"description"`
			} `json:"options"`
		} `json:"questions"`
	} `json:"questions"`
}

func agentsPermissionsCommand(f *cliFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "permissions AGENT",
		Short: "List an agent's pending permission requests; `permissions reply` answers one",
		Args:  argCount(1, 1, "AGENT"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var list permissionList
			raw, err := c.do(cmd.Context(), http.MethodGet, "/agents/"+url.PathEscape(a[0])+"/permissions", nil, &list)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			tw := newTable(cmd.OutOrStdout(), "ID", "SESSION", "PERMISSION", "PATTERNS")
			for _, p := range list.Permissions {
				row(tw, p.ID, p.SessionID, p.Permission, strings.Join(p.Patterns, " "))
			}
			return tw.Flush()
		},
	}
	var allow, always, deny bool
	var message string
	reply := &cobra.Command{
		Use:   "reply AGENT PERMISSION (--allow | --always | --deny)",
		Short: "Answer a permission request: allow once, allow always, or deny",
		Example: `  agenthost agents permissions reply ag2x… per_01… --allow
  agenthost agents permissions reply ag2x… per_01… --deny --message "not on main"`,
		Args: argCount(2, 2, "AGENT PERMISSION"),
		RunE: func(cmd *cobra.Command, a []string) error {
			var answer string
			n := 0
			if allow {
				answer, n = "once", n+1
			}
			if always {
				answer, n = "always", n+1
			}
			if deny {
				answer, n = "reject", n+1
			}
			if n != 1 {
				return usageError(errors.New("give exactly one of --allow, --always and --deny"))
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			body := map[string]string{"reply": answer}
			if message != "" {
				body["message"] = message
			}
			raw, err := c.do(cmd.Context(), http.MethodPost, "/agents/"+url.PathEscape(a[0])+"/permissions/"+url.PathEscape(a[1])+"/reply", body, nil)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s replied: %s\n", a[1], answer)
			return nil
		},
	}
	reply.Flags().BoolVar(&allow, "allow", false, "allow this once")
	reply.Flags().BoolVar(&always, "always", false, "allow, and allow the same patterns from now on")
	reply.Flags().BoolVar(&deny, "deny", false, "deny")
	reply.Flags().StringVar(&message, "message", "", "a note for the agent (why it was denied, say)")
	cmd.AddCommand(reply)
	return cmd
}

func agentsQuestionsCommand(f *cliFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "questions AGENT",
		Short: "List an agent's pending questions; `questions reply` answers one",
		Args:  argCount(1, 1, "AGENT"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var list questionList
			raw, err := c.do(cmd.Context(), http.MethodGet, "/agents/"+url.PathEscape(a[0])+"/questions", nil, &list)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.json {
				return printJSON(out, raw)
			}
			for _, q := range list.Questions {
				fmt.Fprintf(out, "%s (session %s)\n", q.ID, q.SessionID)
				for i, item := range q.Questions {
					header := ""
					if item.Header != "" {
						header = "[" + item.Header + "] "
					}
					multi := ""
					if item.MultiSelect {
						multi = " (several answers allowed)"
					}
					fmt.Fprintf(out, "  %d. %s%s%s\n", i+1, header, item.Question, multi)
					for _, o := range item.Options {
						if o.Description != "" {
							fmt.Fprintf(out, "     - %s: %s\n", o.Label, o.Description)
						} else {
							fmt.Fprintf(out, "     - %s\n", o.Label)
						}
					}
				}
			}
			return nil
		},
	}
	var answers []string
	var answersJSON string
	reply := &cobra.Command{
		Use:   "reply AGENT QUESTION (--answer LABEL… | --answers-json JSON)",
		Short: "Answer a pending question with option labels, one --answer per question",
		Long: `Answer a pending question. Give one --answer per question of the request, in
order; for a question that allows several answers, separate the labels with
commas. --answers-json takes the API's form instead: an array of arrays of
labels, one inner array per question.`,
		Example: `  agenthost agents questions reply ag2x… que_01… --answer Simple
  agenthost agents questions reply ag2x… que_01… --answers-json '[["Simple"],["Go","Rust"]]'`,
		Args: argCount(2, 2, "AGENT QUESTION"),
		RunE: func(cmd *cobra.Command, a []string) error {
			var body [][]string
			switch {
			case len(answers) > 0 && answersJSON != "":
				return usageError(errors.New("give --answer or --answers-json, not both"))
			case answersJSON != "":
				if err := json.Unmarshal([]byte(answersJSON), &body); err != nil {
					return usageError(fmt.Errorf("--answers-json: want an array of arrays of labels: %w", err))
				}
			case len(answers) > 0:
				for _, ans := range answers {
					var labels []string
					for _, l := range strings.Split(ans, ",") {
						if l = strings.TrimSpace(l); l != "" {
							labels = append(labels, l)
						}
					}
					body = append(body, labels)
				}
			default:
				return usageError(errors.New("give --answer (one per question) or --answers-json"))
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			raw, err := c.do(cmd.Context(), http.MethodPost, "/agents/"+url.PathEscape(a[0])+"/questions/"+url.PathEscape(a[1])+"/reply",
				map[string]any{"answers": body}, nil)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s replied\n", a[1])
			return nil
		},
	}
	reply.Flags().StringArrayVar(&answers, "answer", nil, "the answer to the next question: an option's label (several, comma-separated, where allowed)")
	reply.Flags().StringVar(&answersJSON, "answers-json", "", `all answers as the API takes them, e.g. '[["Simple"]]'`)
	cmd.AddCommand(reply)
	return cmd
}

func agentsLogsCommand(f *cliFlags) *cobra.Command {
	var duration time.Duration
	var container bool
	var lines int
	cmd := &cobra.Command{
		Use:   "logs AGENT",
		Short: "Follow an agent's event stream, or with --container print its container's output",
		Long: `Follow what an agent does: this follows the agent's event stream
(GET /api/v1/agents/{id}/events, server-sent events) and prints its events as
they come — status changes, busy and idle, finished text and tool calls of
replies, permissions and questions asked and answered, sessions made. It starts
with the agent's current status and runs until interrupted, until the agent is
deleted, or for --duration.

With --json every event is a line of JSON, {"event": NAME, "data": DATA}, with
DATA as the stream carries it (for runtime events, {"type", "data"} with
OpenCode's event) — every event, including those left out above.

With --container it prints instead the last --lines lines (default 200, at most
5000) that the agent's container wrote to stdout and stderr — what its runtime
printed while starting and running (GET /api/v1/agents/{id}/logs) — and exits.
The agent must be running. With --json that is one object: {"agentId", "text",
"truncated"}, truncated being true when older output was left out.`,
		Example: `  agenthost agents logs ag2x…
  agenthost agents logs ag2x… --json --duration 1m | jq -c .
  agenthost agents logs ag2x… --container --lines 50`,
		Args: argCount(1, 1, "AGENT"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if cmd.Flags().Changed("lines") && !container {
				return usageError(errors.New("--lines goes with --container"))
			}
			if container && duration != 0 {
				return usageError(errors.New("--duration is for following the event stream, not --container"))
			}
			if container && (lines < 1 || lines > 5000) {
				return usageError(errors.New("--lines must be 1 to 5000"))
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			if container {
				return c.printContainerLog(cmd.Context(), cmd.OutOrStdout(), a[0], lines, f.json)
			}
			ctx, cancel := withOptionalTimeout(cmd.Context(), true, duration)
			defer cancel()
			err = c.followEvents(ctx, a[0], eventPrinter(cmd.OutOrStdout(), f.json, a[0]))
			if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && cmd.Context().Err() == nil {
				return nil // --duration is up
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&duration, "duration", 0, "stop following after this long (0: until interrupted or the agent is deleted)")
	cmd.Flags().BoolVar(&container, "container", false, "print the container's recent stdout and stderr instead of following events")
	cmd.Flags().IntVar(&lines, "lines", 200, "with --container: how many trailing lines, 1 to 5000")
	return cmd
}

// printContainerLog prints the tail of the agent's container output as the
// API answers it (plain text), or as one JSON object.
func (c *apiClient) printContainerLog(ctx context.Context, w io.Writer, id string, lines int, asJSON bool) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	path := "/agents/" + url.PathEscape(id) + "/logs?lines=" + strconv.Itoa(lines)
	res, err := c.send(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return &exitError{code: exitUnavailable, err: fmt.Errorf("GET %s: reading the answer: %w", path, err)}
	}
	if res.StatusCode != http.StatusOK {
		return responseError(res, b)
	}
	if asJSON {
		raw, err := json.Marshal(map[string]any{"agentId": id, "text": string(b), "truncated": res.Header.Get("Log-Truncated") == "true"})
		if err != nil {
			return err
		}
		return printJSON(w, raw)
	}
	_, err = w.Write(b)
	return err
}

// followEvents reads the agent's event stream and hands each event to fn
// until ctx ends (its error is returned) or a "deleted" event arrives (nil).
// A stream the server ends otherwise is an unavailable error.
func (c *apiClient) followEvents(ctx context.Context, id string, fn func(event string, data json.RawMessage) error) error {
	res, err := c.send(ctx, http.MethodGet, "/agents/"+url.PathEscape(id)+"/events", nil)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		return responseError(res, b)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20) // a runtime event may carry a whole tool output
	var event string
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event != "" || data.Len() > 0 {
				if event == "" {
					event = "message"
				}
				if err := fn(event, json.RawMessage(data.String())); err != nil {
					return err
				}
				if event == "deleted" {
					return nil
				}
			}
			event = ""
			data.Reset()
		case strings.HasPrefix(line, ":"): // a keep-alive comment
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return &exitError{code: exitUnavailable, err: fmt.Errorf("the event stream broke off: %w", err)}
	}
	return &exitError{code: exitUnavailable, err: errors.New("the server ended the event stream")}
}

// eventPrinter prints stream events: as JSON lines, or one readable line
// per event that matters to a person, with the time it arrived.
func eventPrinter(w io.Writer, asJSON bool, agentID string) func(string, json.RawMessage) error {
	printed := map[string]bool{} // parts already shown
	return func(event string, data json.RawMessage) error {
		if asJSON {
			b, err := json.Marshal(struct {
				Event string          `json:"event"`
				Data  json.RawMessage `json:"data"`
			}{event, data})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(w, "%s\n", b)
			return err
		}
		line := describeEvent(event, data, agentID, printed)
		if line == "" {
			return nil
		}
		_, err := fmt.Fprintf(w, "%s %s\n", time.Now().Format("15:04:05"), line)
		return err
	}
}

// describeEvent is the readable line for an event, "" for one left out
// (streamed deltas, unfinished parts, UI chatter).
func describeEvent(event string, data json.RawMessage, agentID string, printed map[string]bool) string {
	switch event {
	case "status":
		var s struct {
			Status   string  `json:"status"`
			ErrorMsg *string `json:"errorMsg"`
		}
		json.Unmarshal(data, &s)
		if s.ErrorMsg != nil {
			return "status " + s.Status + ": " + *s.ErrorMsg
		}
		return "status " + s.Status
	case "busy":
		var b struct {
			Busy bool `json:"busy"`
		}
		json.Unmarshal(data, &b)
		return map[bool]string{true: "busy", false: "idle"}[b.Busy]
	case "deleted":
		return "deleted"
	}
	var wrapped struct {
		Type string `json:"type"`
		Data struct {
			Properties json.RawMessage `json:"properties"`
		} `json:"data"`
	}
	if json.Unmarshal(data, &wrapped) != nil {
		return ""
	}
	var pr struct {
		SessionID  string   `json:"sessionID"`
		ID         string   `json:"id"`
		Permission string   `json:"permission"`
		Patterns   []string `json:"patterns"`
		RequestID  string   `json:"requestID"`
		Reply      string   `json:"reply"`
		Response   string   `json:"response"`
		Questions  []struct {
			Question string `json:"question"`
		} `json:"questions"`
		Info struct {
			ID string `json:"id"`
		} `json:"info"`
		Part struct {
			ID   string `json:"id"`
			Type string `json:"type"`
			Text string `json:"text"`
			Tool string `json:"tool"`
			Time *struct {
				End float64 `json:"end"`
			} `json:"time"`
			State struct {
				Status string `json:"status"`
				Output string `json:"output"`
				Error  string `json:"error"`
			} `json:"state"`
		} `json:"part"`
		Error json.RawMessage `json:"error"`
	}
	json.Unmarshal(wrapped.Data.Properties, &pr)
	switch wrapped.Type {
	case "message.part.updated":
		part := pr.Part
		key := part.ID + "/" + part.State.Status
		switch {
		case printed[key]:
			return ""
		case part.Type == "text" && part.Time != nil && part.Time.End != 0:
			printed[key] = true
			return pr.SessionID + " text: " + strings.TrimSpace(part.Text)
		case part.Type == "tool" && (part.State.Status == "completed" || part.State.Status == "error"):
			printed[key] = true
			detail := firstLine(part.State.Output)
			if part.State.Error != "" {
				detail = firstLine(part.State.Error)
			}
			return fmt.Sprintf("%s tool %s %s: %s", pr.SessionID, part.Tool, part.State.Status, detail)
		}
	case "permission.asked":
		return fmt.Sprintf("%s permission %s asked: %s %s (agenthost agents permissions reply %s %s --allow|--deny)",
			pr.SessionID, pr.ID, pr.Permission, strings.Join(pr.Patterns, " "), agentID, pr.ID)
	case "permission.replied":
		return fmt.Sprintf("%s permission %s replied: %s", pr.SessionID, orDash(pr.RequestID+pr.ID), pr.Reply+pr.Response)
	case "question.asked":
		var qs []string
		for _, q := range pr.Questions {
			qs = append(qs, q.Question)
		}
		return fmt.Sprintf("%s question %s asked: %s (agenthost agents questions %s)", pr.SessionID, pr.ID, strings.Join(qs, " / "), agentID)
	case "question.replied", "question.rejected":
		return fmt.Sprintf("%s %s %s", pr.SessionID, strings.ReplaceAll(wrapped.Type, ".", " "), orDash(pr.RequestID+pr.ID))
	case "session.created":
		return "session " + pr.Info.ID + " created"
	case "session.error":
		return fmt.Sprintf("%s session error: %s", pr.SessionID, firstLine(string(pr.Error)))
	}
	return ""
}
