package nodeagent

import (
	"testing"
	"time"
)

func TestWatchLag(t *testing.T) {
	const bound = 5 * time.Second
	t0 := time.Unix(1_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	mustBe := func(t *testing.T, l *watchLag, now time.Time, want bool) {
		t.Helper()
		if target, reached, late := l.behind(now, bound); late != want {
			t.Fatalf("behind at %v = %v (target %d, reached %d), want %v", now.Sub(t0), late, target, reached, want)
		}
	}

	t.Run("a watch that reaches the leader's index in time is not behind", func(t *testing.T) {
		var l watchLag
		l.watchAt(10)
		l.leaderAt(20, at(0))
		mustBe(t, &l, at(4*time.Second), false)
		l.watchAt(20)
		mustBe(t, &l, at(time.Minute), false)
	})
	t.Run("a watch that stops short of the leader's index is behind after the bound, not before", func(t *testing.T) {
		var l watchLag
		l.watchAt(10)
		l.leaderAt(20, at(0))
		l.watchAt(19)
		mustBe(t, &l, at(bound), false)
		mustBe(t, &l, at(bound+time.Millisecond), true)
	})
	t.Run("newer leader indexes do not push the deadline of an unmet one", func(t *testing.T) {
		var l watchLag
		l.leaderAt(20, at(0))
		for i := range 20 {
			l.watchAt(uint64(10 + i/2)) // advancing, never reaching 20
			l.leaderAt(uint64(21+i), at(time.Duration(i)*500*time.Millisecond))
		}
		mustBe(t, &l, at(bound+time.Millisecond), true)
	})
	t.Run("once met, the next leader index starts a new bound", func(t *testing.T) {
		var l watchLag
		l.leaderAt(20, at(0))
		l.watchAt(20)
		l.leaderAt(30, at(10*time.Second))
		mustBe(t, &l, at(14*time.Second), false)
		mustBe(t, &l, at(16*time.Second), true)
	})
	t.Run("a leader index the watch already passed sets no target", func(t *testing.T) {
		var l watchLag
		l.watchAt(50)
		l.leaderAt(40, at(0))
		mustBe(t, &l, at(time.Hour), false)
	})
	t.Run("a leader that names no index (an older server) sets no target", func(t *testing.T) {
		var l watchLag
		l.leaderAt(0, at(0))
		mustBe(t, &l, at(time.Hour), false)
	})
	t.Run("a new watch starts from nothing", func(t *testing.T) {
		var l watchLag
		l.watchAt(10)
		l.leaderAt(20, at(0))
		l.restart()
		mustBe(t, &l, at(time.Hour), false)
		l.leaderAt(20, at(time.Hour))
		mustBe(t, &l, at(time.Hour+bound+time.Millisecond), true)
	})
}
