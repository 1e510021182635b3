package api

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/agenthost/agenthost/nodeagent/runtime"
)

// The endpoints that talk to a running agent: messages, usage, abort,
// files, permissions, questions and the container's logs. Each finds the
// caller's agent (404), checks it runs (400) and asks its node; a node or
// runtime that does not answer is the reference's 502.

type sessionMessages struct {
	SessionID string            `json:"sessionId"`
	Messages  []runtime.Message `json:"messages"`
	Usage     runtime.Usage     `json:"usage"`
}

// titledSessionMessages is one session of the all-sessions history.
type titledSessionMessages struct {
	SessionID string            `json:"sessionId"`
	Title     *string           `json:"title"`
	Messages  []runtime.Message `json:"messages"`
	Usage     runtime.Usage     `json:"usage"`
}

func (s *Server) getMessages(w http.ResponseWriter, r *http.Request, p Principal) error {
	_, rt, err := s.runningAgent(r, p)
	if err != nil {
		return err
	}
	if sid := r.URL.Query().Get("sessionId"); sid != "" {
		if !utf8.ValidString(sid) {
			return notFound("session %q not found", sid) // the node cannot be asked about it
		}
		msgs, err := rt.Messages(r.Context(), sid)
		if err != nil {
			return err
		}
		msgs = nonNil(msgs)
		return writeJSON(w, http.StatusOK, sessionMessages{SessionID: sid, Messages: msgs, Usage: runtime.SumUsage(msgs)})
	}
	sessions, err := rt.Sessions(r.Context())
	if err != nil {
		return err
	}
	out := struct {
		Sessions []titledSessionMessages `json:"sessions"`
	}{Sessions: []titledSessionMessages{}}
	for _, sess := range sessions {
		msgs, err := rt.Messages(r.Context(), sess.ID)
		if errors.Is(err, runtime.ErrNotFound) {
			continue // deleted since it was listed
		}
		if err != nil {
			return err
		}
		msgs = nonNil(msgs)
		out.Sessions = append(out.Sessions, titledSessionMessages{SessionID: sess.ID, Title: nullable(sess.Title), Messages: msgs, Usage: runtime.SumUsage(msgs)})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) sendMessage(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req struct {
		Message   *string `json:"message"`
		SessionID string  `json:"sessionId"`
	}
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Message == nil || *req.Message == "" {
		return badRequest("message is required")
	}
	if len(*req.Message) > maxPromptBytes {
		return badRequest("message is limited to %d KiB", maxPromptBytes>>10)
	}
	_, rt, err := s.runningAgent(r, p)
	if err != nil {
		return err
	}
	sid := req.SessionID
	if sid == "" {
		sess, err := rt.CreateSession(r.Context(), "")
		if err != nil {
			return err
		}
		sid = sess.ID
	}
	if err := rt.Send(r.Context(), sid, *req.Message); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"sessionId": sid, "sent": true})
}

func (s *Server) getUsage(w http.ResponseWriter, r *http.Request, p Principal) error {
	a, rt, err := s.runningAgent(r, p)
	if err != nil {
		return err
	}
	u, err := rt.Usage(r.Context())
	if err != nil {
		return err
	}
	u.Sessions = nonNil(u.Sessions)
	return writeJSON(w, http.StatusOK, struct {
		AgentID string `json:"agentId"`
		runtime.AgentUsage
	}{a.ID, u})
}

func (s *Server) abort(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req struct {
		SessionID string `json:"sessionId"`
	}
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	a, rt, err := s.runningAgent(r, p)
	if err != nil {
		return err
	}
	if req.SessionID != "" {
		if err := rt.Abort(r.Context(), req.SessionID); err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, map[string]any{"agentId": a.ID, "sessionId": req.SessionID, "aborted": true})
	}
	ids, err := rt.AbortAll(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"agentId": a.ID, "aborted": nonNil(ids)})
}

// maxUploadBody is the largest upload request: one 50 MB file and the
// multipart framing around it. The node agent enforces the per-file and
// per-agent limits and the allowed types (runtime.Uploads).
const maxUploadBody = runtime.MaxUploadFileBytes + 1<<20

func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request, p Principal) error {
	_, rt, err := s.runningAgent(r, p)
	if err != nil {
		return err
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "multipart/form-data" {
		return badRequest("send the file as multipart/form-data in a field named \"file\"")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxUploadBody)
	mr, err := r.MultipartReader()
	if err != nil {
		return badRequest("invalid multipart body: %v", err)
	}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return badRequest("missing file: send it in a multipart field named \"file\"")
		}
		if err != nil {
			return uploadBodyError(err)
		}
		if part.FormName() != "file" {
			part.Close()
			continue
		}
		if part.FileName() == "" {
			return badRequest("the \"file\" field needs a file name")
		}
		if !utf8.ValidString(part.FileName()) {
			return badRequest("the file name is not valid UTF-8")
		}
		content := &partReader{r: part}
		up, err := rt.Upload(r.Context(), part.FileName(), content)
		if err != nil {
			if content.err != nil {
				// The request's body broke off, was malformed or too big:
				// the client's fault, not the agent's.
				return uploadBodyError(content.err)
			}
			return err
		}
		return writeJSON(w, http.StatusOK, up)
	}
}

// partReader remembers why reading the uploaded file failed, if it did.
type partReader struct {
	r   io.Reader
	err error
}

func (p *partReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if err != nil && err != io.EOF && p.err == nil {
		p.err = err
	}
	return n, err
}

func uploadBodyError(err error) error {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return badRequest("file exceeds %d MB", runtime.MaxUploadFileBytes>>20)
	}
	return badRequest("invalid multipart body: %v", err)
}

// The line counts of GET .../logs: the default, and the most a caller may
// ask for (the node agent's bound, driver.MaxLogLines).
const (
	defaultLogLines = 200
	maxLogLines     = 5000
)

// getLogs answers the last lines of the agent's container output as plain
// text; Log-Truncated says whether older output was left out.
func (s *Server) getLogs(w http.ResponseWriter, r *http.Request, p Principal) error {
	lines := defaultLogLines
	if q := r.URL.Query(); q.Has("lines") {
		n, err := strconv.Atoi(q.Get("lines"))
		if err != nil || n < 1 || n > maxLogLines {
			return badRequest("lines must be an integer from 1 to %d", maxLogLines)
		}
		lines = n
	}
	_, rt, err := s.runningAgent(r, p)
	if err != nil {
		return err
	}
	log, err := rt.Logs(r.Context(), lines)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	// The container's output is the tenant's code's: a browser must not
	// take it for anything but text.
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Log-Truncated", strconv.FormatBool(log.Truncated))
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(log.Text)
	return err
}

type permissionView struct {
	ID         string                  `json:"id"`
	SessionID  string                  `json:"sessionID"`
	Permission string                  `json:"permission"`
	Patterns   []string                `json:"patterns"`
	Metadata   map[string]any          `json:"metadata"`
	Always     bool                    `json:"always"`
	Tool       *runtime.PermissionTool `json:"tool,omitempty"`
	// AlwaysPatterns are what an "always" reply would allow from then on.
	AlwaysPatterns []string `json:"alwaysPatterns"`
}

func (s *Server) listPermissions(w http.ResponseWriter, r *http.Request, p Principal) error {
	_, rt, err := s.runningAgent(r, p)
	if err != nil {
		return err
	}
	perms, err := rt.Permissions(r.Context())
	if err != nil {
		return err
	}
	out := []permissionView{}
	for _, pm := range perms {
		md := pm.Metadata
		if md == nil {
			md = map[string]any{}
		}
		out = append(out, permissionView{
			ID: pm.ID, SessionID: pm.SessionID, Permission: pm.Permission, Patterns: nonNil(pm.Patterns),
			Metadata: md, Tool: pm.Tool, AlwaysPatterns: nonNil(pm.AlwaysPatterns),
		})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"permissions": out})
}

func (s *Server) replyPermission(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req struct {
		Reply   runtime.PermissionReply `json:"reply"`
		Message string                  `json:"message"`
	}
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if !req.Reply.Valid() {
		return badRequest("reply must be \"once\", \"always\" or \"reject\"")
	}
	_, rt, err := s.runningAgent(r, p)
	if err != nil {
		return err
	}
	if !utf8.ValidString(r.PathValue("permissionId")) {
		return notFound("permission request %q not found", r.PathValue("permissionId"))
	}
	if err := rt.ReplyPermission(r.Context(), r.PathValue("permissionId"), req.Reply, req.Message); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"replied": true, "reply": req.Reply})
}

func (s *Server) listQuestions(w http.ResponseWriter, r *http.Request, p Principal) error {
	_, rt, err := s.runningAgent(r, p)
	if err != nil {
		return err
	}
	qs, err := rt.Questions(r.Context())
	if err != nil {
		return err
	}
	for i := range qs {
		qs[i].Questions = nonNil(qs[i].Questions)
		for j := range qs[i].Questions {
			qs[i].Questions[j].Options = nonNil(qs[i].Questions[j].Options)
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"questions": nonNil(qs)})
}

func (s *Server) replyQuestion(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req struct {
		Answers json.RawMessage `json:"answers"`
	}
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	var answers [][]string
	if len(req.Answers) == 0 || string(req.Answers) == "null" || json.Unmarshal(req.Answers, &answers) != nil {
		return badRequest("answers must be an array of arrays of option labels, one per question")
	}
	for i := range answers {
		answers[i] = nonNil(answers[i])
	}
	_, rt, err := s.runningAgent(r, p)
	if err != nil {
		return err
	}
	if !utf8.ValidString(r.PathValue("questionId")) {
		return apiError(http.StatusBadGateway, CodeNotFound, "question %q is not pending on this agent", r.PathValue("questionId"))
	}
	if err := rt.ReplyQuestion(r.Context(), r.PathValue("questionId"), answers); err != nil {
		if errors.Is(err, runtime.ErrNotFound) {
			// The reference answers an unknown question ID with 502.
			return apiError(http.StatusBadGateway, CodeNotFound, "question %q is not pending on this agent", r.PathValue("questionId"))
		}
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"replied": true})
}
