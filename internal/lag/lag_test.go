package lag

import (
	"testing"
	"time"
)

func TestTracker(t *testing.T) {
	const bound = 5 * time.Second
	t0 := time.Unix(1_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	mustBe := func(t *testing.T, l *Tracker, now time.Time, want bool) {
		t.Helper()
		if target, reached, late := l.Behind(now, bound); late != want {
			t.Fatalf("behind at %v = %v (target %d, reached %d), want %v", now.Sub(t0), late, target, reached, want)
		}
	}

	t.Run("a server that reaches the leader's index in time is not behind", func(t *testing.T) {
		var l Tracker
		l.ServerAt(10)
		l.LeaderAt(20, at(0))
		mustBe(t, &l, at(4*time.Second), false)
		l.ServerAt(20)
		mustBe(t, &l, at(time.Minute), false)
	})
	t.Run("a server that stops short of the leader's index is behind after the bound, not before", func(t *testing.T) {
		var l Tracker
		l.ServerAt(10)
		l.LeaderAt(20, at(0))
		l.ServerAt(19)
		mustBe(t, &l, at(bound), false)
		mustBe(t, &l, at(bound+time.Millisecond), true)
	})
	t.Run("newer leader indexes do not push the deadline of an unmet one", func(t *testing.T) {
		var l Tracker
		l.LeaderAt(20, at(0))
		for i := range 20 {
			l.ServerAt(uint64(10 + i/2)) // advancing, never reaching 20
			l.LeaderAt(uint64(21+i), at(time.Duration(i)*500*time.Millisecond))
		}
		mustBe(t, &l, at(bound+time.Millisecond), true)
	})
	t.Run("once met, the next leader index starts a new bound", func(t *testing.T) {
		var l Tracker
		l.LeaderAt(20, at(0))
		l.ServerAt(20)
		l.LeaderAt(30, at(10*time.Second))
		mustBe(t, &l, at(14*time.Second), false)
		mustBe(t, &l, at(16*time.Second), true)
	})
	t.Run("a leader index the server already passed sets no target", func(t *testing.T) {
		var l Tracker
		l.ServerAt(50)
		l.LeaderAt(40, at(0))
		mustBe(t, &l, at(time.Hour), false)
	})
	t.Run("a leader that names no index (an older server) sets no target", func(t *testing.T) {
		var l Tracker
		l.LeaderAt(0, at(0))
		mustBe(t, &l, at(time.Hour), false)
	})
	t.Run("a restarted tracker starts from nothing", func(t *testing.T) {
		var l Tracker
		l.ServerAt(10)
		l.LeaderAt(20, at(0))
		l.Restart()
		mustBe(t, &l, at(time.Hour), false)
		l.LeaderAt(20, at(time.Hour))
		mustBe(t, &l, at(time.Hour+bound+time.Millisecond), true)
	})
}
