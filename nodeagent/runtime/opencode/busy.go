package opencode

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/agenthost/agenthost/nodeagent/runtime"
)

// busyTracker knows, from memory, whether the agent is working.
//
// OpenCode reports each session's status (busy, retry, idle) on its event
// stream and at /session/status, but a message accepted by prompt_async
// shows up there only a moment later: polled right after the send, the
// server says idle. So a send marks its session pending before the request
// goes out, and the mark is cleared only by evidence that the session's
// messages were handled: a busy status followed by idle, or — when events
// were missed — a completed assistant reply newer than the last send, or the
// server reporting idle after it had been seen busy.
type busyTracker struct {
	mu       sync.Mutex
	busy     map[string]bool // sessions the server reports busy or retrying
	pending  map[string]*pendingSend
	subs     map[chan<- runtime.Event]struct{}
	lastBusy bool // as last published
}

type pendingSend struct {
	count   int       // sends not yet known to have failed
	since   time.Time // of the latest send
	sawBusy bool
}

func newBusyTracker() *busyTracker {
	return &busyTracker{busy: map[string]bool{}, pending: map[string]*pendingSend{}, subs: map[chan<- runtime.Event]struct{}{}}
}

// Busy reports whether any session works or waits for its reply to start.
func (b *busyTracker) Busy() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.busyLocked()
}

func (b *busyTracker) busyLocked() bool { return len(b.busy) > 0 || len(b.pending) > 0 }

// flipped publishes the busy state when it changed; b.mu is held.
func (b *busyTracker) flipped() {
	now := b.busyLocked()
	if now == b.lastBusy {
		return
	}
	b.lastBusy = now
	data := []byte(`{"busy":false}`)
	if now {
		data = []byte(`{"busy":true}`)
	}
	b.publishLocked(runtime.Event{Type: runtime.BusyEvent, Data: data})
}

func (b *busyTracker) sending(sessionID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pending[sessionID]
	if p == nil {
		p = &pendingSend{}
		b.pending[sessionID] = p
	}
	p.count++
	p.since = time.Now()
	b.flipped()
}

// sendRefused undoes one send that the server certainly did not take.
func (b *busyTracker) sendRefused(sessionID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.pending[sessionID]; p != nil {
		if p.count--; p.count <= 0 {
			delete(b.pending, sessionID)
		}
	}
	b.flipped()
}

func (b *busyTracker) pendingSessions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.pending))
	for id := range b.pending {
		out = append(out, id)
	}
	return out
}

// status applies one session's status from the event stream.
func (b *busyTracker) status(sessionID, kind string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.flipped()
	p := b.pending[sessionID]
	if kind == "idle" {
		delete(b.busy, sessionID)
		if p != nil && p.sawBusy {
			delete(b.pending, sessionID)
		}
		return
	}
	b.busy[sessionID] = true
	if p != nil {
		p.sawBusy = true
	}
}

// resync replaces the busy set with the server's answer from /session/status
// (events may have been missed while disconnected). A pending session seen
// busy before and idle now went through its work meanwhile.
func (b *busyTracker) resync(busy map[string]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.flipped()
	b.busy = busy
	for id, p := range b.pending {
		switch {
		case busy[id]:
			p.sawBusy = true
		case p.sawBusy:
			delete(b.pending, id)
		}
	}
}

// answered clears a pending send whose reply completed after the last send.
func (b *busyTracker) answered(sessionID string, completedAt time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.pending[sessionID]; p != nil && !b.busy[sessionID] && !completedAt.Before(p.since) {
		delete(b.pending, sessionID)
	}
	b.flipped()
}

// pendingGiveUp is how long a send may show no sign of work before it is
// taken for lost.
const pendingGiveUp = 30 * time.Second

// giveUp clears a send that has shown no sign of work for d while the server
// was not seen busy with it.
func (b *busyTracker) giveUp(sessionID string, d time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.flipped()
	if p := b.pending[sessionID]; p != nil && !p.sawBusy && !b.busy[sessionID] && time.Since(p.since) > d {
		delete(b.pending, sessionID)
		return true
	}
	return false
}

// stalePending lists sessions whose last send has waited longer than d with
// no sign of work.
func (b *busyTracker) stalePending(d time.Duration) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for id, p := range b.pending {
		if !p.sawBusy && !b.busy[id] && time.Since(p.since) > d {
			out = append(out, id)
		}
	}
	return out
}

// Subscribe delivers every event to ch until the returned func is called.
// A subscriber that does not keep up misses events rather than stall the
// stream.
func (c *Client) Subscribe(ch chan<- runtime.Event) (unsubscribe func()) {
	b := c.busy
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}
}

func (b *busyTracker) publish(ev runtime.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.publishLocked(ev)
}

func (b *busyTracker) publishLocked(ev runtime.Event) {
	for ch := range b.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

// followEvents reads GET /event for as long as the client lives, reconnecting
// with backoff, and checks pending sends against the server when events are
// quiet.
func (c *Client) followEvents(ctx context.Context) {
	defer close(c.done)
	go c.checkPending(ctx)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		connected, err := c.readEvents(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = 100 * time.Millisecond
		}
		c.cfg.Logger.Debug("runtime event stream ended", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// readEvents follows one connection of the event stream.
func (c *Client) readEvents(ctx context.Context) (connected bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+"/event", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.cfg.Password != "" {
		req.SetBasicAuth(Username, c.cfg.Password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, &statusError{resp.StatusCode}
	}
	// Events missed while disconnected are made good from the server's
	// current status.
	if err := c.resyncStatus(ctx); err != nil {
		return false, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxEvent) // a message.updated event can carry a large part
	var data bytes.Buffer
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0: // end of one event
			if data.Len() > 0 {
				c.handleEvent(data.Bytes())
				data.Reset()
			}
		case bytes.HasPrefix(line, []byte("data:")):
			if data.Len()+len(line) > maxEvent {
				return true, fmt.Errorf("event larger than %d MB", maxEvent>>20)
			}
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.Write(bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" ")))
		}
	}
	return true, sc.Err()
}

// maxEvent bounds one event from the runtime's stream.
const maxEvent = 8 << 20

type statusError struct{ code int }

func (e *statusError) Error() string { return http.StatusText(e.code) }

func (c *Client) handleEvent(raw []byte) {
	var ev struct {
		Type       string `json:"type"`
		Properties struct {
			SessionID string `json:"sessionID"`
			Status    struct {
				Type string `json:"type"`
			} `json:"status"`
		} `json:"properties"`
	}
	if json.Unmarshal(raw, &ev) != nil {
		return
	}
	switch ev.Type {
	case "session.status":
		if ev.Properties.SessionID != "" && ev.Properties.Status.Type != "" {
			c.busy.status(ev.Properties.SessionID, ev.Properties.Status.Type)
		}
	case "session.idle":
		if ev.Properties.SessionID != "" {
			c.busy.status(ev.Properties.SessionID, "idle")
		}
	}
	c.busy.publish(runtime.Event{Type: ev.Type, Data: slices.Clone(raw)})
}

func (c *Client) resyncStatus(ctx context.Context) error {
	var status map[string]struct {
		Type string `json:"type"`
	}
	if err := c.call(ctx, http.MethodGet, "/session/status", nil, &status); err != nil {
		return err
	}
	busy := make(map[string]bool, len(status))
	for id, s := range status {
		if s.Type != "idle" {
			busy[id] = true
		}
	}
	c.busy.resync(busy)
	return nil
}

// checkPending looks, once a second, at sends that have shown no sign of
// work for two seconds: if the session's last reply completed after the send,
// the events for it were missed and the send is done.
func (c *Client) checkPending(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, id := range c.busy.stalePending(2 * time.Second) {
			// A message OpenCode accepted but never worked on (it failed
			// before its first step), or a runtime that stopped answering,
			// would keep the agent busy for good: after a generous wait with
			// no sign of work, let go — whether or not the server answers.
			if c.busy.giveUp(id, pendingGiveUp) {
				c.cfg.Logger.Warn("a sent message showed no sign of work; the session counts as idle again", "session", id)
				continue
			}
			if err := c.resyncStatus(ctx); err != nil {
				continue
			}
			var list []ocMessage
			if err := c.call(ctx, http.MethodGet, "/session/"+id+"/message", nil, &list); err != nil {
				continue
			}
			for i := len(list) - 1; i >= 0; i-- {
				m := list[i].Info
				if m.Role == "assistant" && m.Time.Completed > 0 {
					c.busy.answered(id, time.UnixMilli(m.Time.Completed))
					break
				}
			}
		}
	}
}
