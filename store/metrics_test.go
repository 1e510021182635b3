package store

import (
	"fmt"
	"testing"
)

// TestOrgSeriesBounded: however many orgs there are, at most the limit get
// series of their own; every near-cap org comes first, fullest first; the
// rest of the top N by running agents follow; the others' running agents
// are summed, so that the per-org series add up to the cluster's total.
func TestOrgSeriesBounded(t *testing.T) {
	var usage []orgCapUse
	total := 0
	for i := range 5000 {
		u := orgCapUse{ID: fmt.Sprintf("org%04d", i), Running: i % 7}
		switch {
		case i%1000 == 3:
			u.Cap, u.Running = 10, 10 // at its cap
		case i%1000 == 4:
			u.Cap, u.Running = 10, 8 // near it
		case i%1000 == 5:
			u.Cap, u.Running = 100, 50 // capped, far from it
		}
		total += u.Running
		usage = append(usage, u)
	}
	own, other := orgSeries(usage, 3, 100, 0.8)
	if len(own) != 13 {
		t.Fatalf("%d orgs with own series, want 10 near their cap + 3 top", len(own))
	}
	for i, u := range own[:10] {
		want := 10
		if i >= 5 {
			want = 8
		}
		if u.Cap != 10 || u.Running != want {
			t.Fatalf("own[%d] = %+v: near-cap orgs must come first, fullest first", i, u)
		}
	}
	for _, u := range own[10:] {
		if u.Running != 50 {
			t.Fatalf("top org %+v: want one with the most running agents", u)
		}
	}
	sum := other
	for _, u := range own {
		sum += u.Running
	}
	if sum != total {
		t.Fatalf("own + other = %d running agents, want %d", sum, total)
	}

	// More near-cap orgs than the limit: the fullest are kept.
	own, _ = orgSeries(usage, 3, 4, 0.8)
	if len(own) != 4 || own[3].Running != 10 {
		t.Fatalf("limit 4: %+v", own)
	}
	// Stable: the same input picks the same orgs.
	a, _ := orgSeries(usage, 20, 100, 0.8)
	b, _ := orgSeries(usage, 20, 100, 0.8)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("the choice changed between two calls")
	}
}
