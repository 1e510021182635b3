package opencode

import (
	"testing"
	"time"

	"github.com/agenthost/agenthost/nodeagent/runtime"
)

// The tracker's rules, event by event; the tests against a real OpenCode
// check the whole.
func TestBusyTrackerNeedsEvidenceForTheSend(t *testing.T) {
	b := newBusyTracker()
	if b.Busy() {
		t.Fatal("busy at start")
	}
	b.sending("s1")
	if !b.Busy() {
		t.Fatal("idle right after a send")
	}
	b.status("s1", "idle") // a late idle from before the send
	if !b.Busy() {
		t.Fatal("an idle with no busy after the send cleared it")
	}
	b.status("s1", "busy")
	b.status("s1", "idle")
	if b.Busy() {
		t.Fatal("still busy after busy then idle")
	}

	b.sending("s2")
	b.sending("s2")
	b.sendRefused("s2") // the second send was refused, the first taken
	if !b.Busy() {
		t.Fatal("a refused send cleared an accepted one")
	}
	b.sendRefused("s2")
	if b.Busy() {
		t.Fatal("refused sends still count")
	}

	// Seen busy, then the stream dropped and the work finished unseen: the
	// resync after reconnecting must clear it.
	b.sending("s6")
	b.status("s6", "busy")
	b.resync(map[string]bool{})
	if b.Busy() {
		t.Fatal("a session seen busy and now idle on the server stays busy")
	}

	b.sending("s3")
	b.answered("s3", time.Now().Add(-time.Minute)) // a reply from before the send
	if !b.Busy() {
		t.Fatal("an older reply cleared the send")
	}
	b.answered("s3", time.Now().Add(time.Millisecond))
	if b.Busy() {
		t.Fatal("a newer completed reply did not clear the send")
	}

	b.resync(map[string]bool{"s4": true})
	if !b.Busy() {
		t.Fatal("resync lost a busy session")
	}
	b.resync(map[string]bool{})
	if b.Busy() {
		t.Fatal("resync kept a session the server says is idle")
	}

	b.sending("s5")
	if b.giveUp("s5", time.Hour) {
		t.Fatal("gave up on a fresh send")
	}
	if !b.giveUp("s5", 0) || b.Busy() {
		t.Fatal("did not give up on a lost send")
	}
}

func TestBusyTrackerPublishesFlips(t *testing.T) {
	b := newBusyTracker()
	ch := make(chan runtime.Event, 16)
	b.subs[ch] = struct{}{}
	b.sending("s")
	b.status("s", "busy")
	b.status("s", "idle")
	var got []string
	for len(ch) > 0 {
		ev := <-ch
		got = append(got, ev.Type+string(ev.Data))
	}
	want := []string{runtime.BusyEvent + `{"busy":true}`, runtime.BusyEvent + `{"busy":false}`}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("published %v, want %v", got, want)
	}
}
