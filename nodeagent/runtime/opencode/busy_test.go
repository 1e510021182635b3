package opencode

import (
	"testing"
	"time"
)

// The tracker's rules, event by event; the tests against a real OpenCode
// check the whole.
func TestBusyTrackerNeedsEvidenceForTheSend(t *testing.T) {
	b := newBusyTracker()
	if b.Busy() {
		t.Fatal("busy at start")
	}
	tok := b.sending("s1")
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

	tok = b.sending("s2")
	b.sendFailed("s2", tok+1) // another send's failure
	if !b.Busy() {
		t.Fatal("another send's failure cleared this one")
	}
	b.sendFailed("s2", tok)
	if b.Busy() {
		t.Fatal("a failed send still counts")
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
