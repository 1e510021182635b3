package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progress reports a wait on stderr: every change of state on its own line
// with the time since the wait began. On a terminal a live line also shows
// the current state and the elapsed time, redrawn a few times a second; to
// anything else (CI logs, files) only the changes are written, so that logs
// stay free of spinners. A quiet progress (--json) writes nothing.
type progress struct {
	w     io.Writer
	live  bool
	quiet bool
	now   func() time.Time
	start time.Time
	every time.Duration // how often the live line is redrawn

	mu       sync.Mutex
	subject  string
	state    string
	drawn    bool // a live line is on screen
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// newProgress starts reporting on w about subject (an agent's ID, say).
func newProgress(w io.Writer, quiet bool, subject string, now func() time.Time) *progress {
	return startProgress(w, !quiet && isTerminal(w), quiet, subject, now, 200*time.Millisecond)
}

// startProgress is newProgress with the terminal question answered.
func startProgress(w io.Writer, live, quiet bool, subject string, now func() time.Time, every time.Duration) *progress {
	p := &progress{w: w, live: live, quiet: quiet, now: now, start: now(), every: every, subject: subject,
		stop: make(chan struct{}), done: make(chan struct{})}
	if p.live {
		go p.redraw()
	} else {
		close(p.done)
	}
	return p
}

// isTerminal reports whether w is a terminal (and TERM is not "dumb").
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (p *progress) elapsed() string {
	return fmt.Sprintf("%.1fs", p.now().Sub(p.start).Seconds())
}

// setSubject names what is waited for once it is known (a created agent's
// ID).
func (p *progress) setSubject(s string) {
	p.mu.Lock()
	p.subject = s
	p.mu.Unlock()
}

// set records the current state; a change is written as a line.
func (p *progress) set(state string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if state == p.state || p.quiet {
		p.state = state
		return
	}
	p.state = state
	p.clearLocked()
	fmt.Fprintf(p.w, "%s: %s (%s)\n", p.subject, state, p.elapsed())
}

// note writes a line of its own (a hint while waiting).
func (p *progress) note(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.quiet {
		return
	}
	p.clearLocked()
	fmt.Fprintf(p.w, format+"\n", args...)
}

// clearLocked removes the live line.
func (p *progress) clearLocked() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

func (p *progress) redraw() {
	defer close(p.done)
	t := time.NewTicker(p.every)
	defer t.Stop()
	spinner := `|/-\`
	for i := 0; ; i++ {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		fmt.Fprintf(p.w, "\r\033[K%c %s: %s %s", spinner[i%len(spinner)], p.subject, p.state, p.elapsed())
		p.drawn = true
		p.mu.Unlock()
	}
}

// finish stops the live line and clears it.
func (p *progress) finish() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
	p.mu.Lock()
	p.clearLocked()
	p.mu.Unlock()
}
