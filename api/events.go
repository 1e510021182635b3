package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/agenthost/agenthost/nodeagent/runtime"
	"github.com/agenthost/agenthost/store"
)

// GET /api/v1/agents/{agentId}/events streams what happens to an agent as
// server-sent events:
//
//	event: status      data: {"agentId","status","errorMsg"}   from the store
//	event: busy        data: {"busy"}                          the live busy state
//	event: message     data: {"type","data"}                   the runtime's message.* events
//	event: permission  data: {"type","data"}                   permission.* events
//	event: question    data: {"type","data"}                   question.* events
//	event: session     data: {"type","data"}                   session.* events
//	event: deleted     data: {"agentId"}                       then the stream ends
//
// The first events are the current status (and, for a running agent, the
// busy state). A comment line every 15 s keeps proxies from closing an idle
// stream. When the agent stops, runtime events pause; when it runs again,
// they resume.

const keepAliveInterval = 15 * time.Second

// sseEventFor maps a runtime event type to the stream's event name; ""
// drops the event (editor, file-watcher and other UI chatter).
func sseEventFor(t string) string {
	if t == runtime.BusyEvent {
		return "busy"
	}
	kind, _, _ := strings.Cut(t, ".")
	switch kind {
	case "message", "permission", "question", "session":
		return kind
	}
	return ""
}

type runtimeEvent struct {
	gen  int // which follower sent it; a stopped one's events are dropped
	name string
	data any
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, p Principal) error {
	a, err := s.agent(r, p)
	if err != nil {
		return err
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, data any) error {
		b, err := json.Marshal(data)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	changed := make(chan struct{}, 1)
	go func() {
		for {
			applied := s.store.AppliedIndex()
			if err := s.store.WaitForIndex(ctx, applied+1); err != nil {
				return
			}
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}()
	rtEvents := make(chan runtimeEvent, 256)
	var stopWatch context.CancelFunc = func() {}
	defer func() { stopWatch() }()
	watching := false
	gen := 0

	keepAlive := time.NewTicker(keepAliveInterval)
	defer keepAlive.Stop()
	lastStatus := ""
	for {
		a, err = s.store.State().OrgAgent(p.OrgID, a.ID)
		if err != nil {
			return nil // the stream is open: nothing more can be said
		}
		if a == nil {
			send("deleted", map[string]string{"agentId": r.PathValue("agentId")})
			return nil
		}
		if st := string(a.Status) + "\x00" + a.ErrorMsg; st != lastStatus {
			lastStatus = st
			if send("status", map[string]any{"agentId": a.ID, "status": a.Status, "errorMsg": nullable(a.ErrorMsg)}) != nil {
				return nil
			}
		}
		running := a.Status == store.StatusRunning && a.Desired == store.DesiredRunning
		if running && !watching {
			wctx, cancelWatch := context.WithCancel(ctx)
			stopWatch = cancelWatch
			gen++
			go s.followRuntime(wctx, gen, a, rtEvents)
			watching = true
		} else if !running && watching {
			stopWatch()
			watching = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case ev := <-rtEvents:
			if ev.gen != gen || !watching {
				continue
			}
			if ev.name == "" { // the runtime's stream ended: look again
				stopWatch()
				watching = false
				continue
			}
			if send(ev.name, ev.data) != nil {
				return nil
			}
		case <-keepAlive.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return nil
			}
		}
	}
}

// followRuntime forwards a running agent's runtime events until ctx ends;
// when the runtime's stream breaks it waits a moment and sends an empty
// event, so that the stream loop decides afresh whether to follow again.
func (s *Server) followRuntime(ctx context.Context, gen int, a *store.Agent, out chan<- runtimeEvent) {
	rt, err := s.runtimeOf(a)
	if err == nil {
		err = rt.WatchEvents(ctx, func(ev runtime.Event, busy bool) {
			name := sseEventFor(ev.Type)
			var data any
			switch name {
			case "":
				return
			case "busy":
				data = map[string]bool{"busy": busy}
			default:
				raw := ev.Data
				if len(raw) == 0 {
					raw = nil
				}
				data = map[string]any{"type": ev.Type, "data": raw}
			}
			select {
			case out <- runtimeEvent{gen: gen, name: name, data: data}:
			case <-ctx.Done():
			}
		})
	}
	if ctx.Err() != nil {
		return
	}
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return
	}
	select {
	case out <- runtimeEvent{gen: gen}:
	case <-ctx.Done():
	}
}
