package api

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
)

// TestListAgentsPages walks every page of GET /api/v1/agents with and
// without filters, over two orgs whose IDs interleave: each page holds at
// most limit agents, pages follow in ID order without gaps or repeats, the
// last has no nextCursor, and no other org's agent shows up.
func TestListAgentsPages(t *testing.T) {
	h := htNew(t, htOptions{})
	a, b := h.org("pages-a", store.Plan{}), h.org("pages-b", store.Plan{})
	type want struct{ all, tagged, stopped []string }
	var wa want
	for i := range 23 {
		for _, o := range []htOrg{a, b} {
			// "agp…" IDs sort between the two orgs' in turn, and a
			// cursor naming the other org's agent must still work.
			id := fmt.Sprintf("agp%03d%s", i, o.ID[len(o.ID)-2:])
			ag := store.Agent{ID: id, OrgID: o.ID, Name: id, Runtime: "opencode", Desired: store.DesiredRunning,
				Status: store.StatusProvisioning, CreatedAt: time.Now().UTC()}
			if i%3 == 0 {
				ag.Tags = []string{"three"}
			}
			h.htApply(&store.AgentCreate{Agent: ag})
			if o == a {
				wa.all = append(wa.all, id)
				if i%3 == 0 {
					wa.tagged = append(wa.tagged, id)
				}
			}
		}
	}
	// Stop a few of a's: they are the STOPPED filter's answer.
	for _, id := range []string{wa.all[2], wa.all[7], wa.all[20]} {
		h.waitAgent(id, store.StatusRunning)
		h.htApply(&store.AgentSetDesired{ID: id, Desired: store.DesiredStopped})
		h.waitAgent(id, store.StatusStopped)
		wa.stopped = append(wa.stopped, id)
	}
	slices.Sort(wa.stopped)

	walk := func(query string, limit int) []string {
		t.Helper()
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 50 {
				t.Fatalf("%s: pages never end", query)
			}
			r := h.mustStatus(h.do(h.ts, "GET", fmt.Sprintf("/api/v1/agents?limit=%d%s&cursor=%s", limit, query, cursor), a.Token, nil), 200)
			var page listAgentsResponse
			r.decode(t, &page)
			if len(page.Agents) > limit {
				t.Fatalf("%s: page of %d, limit %d", query, len(page.Agents), limit)
			}
			for _, v := range page.Agents {
				got = append(got, v.AgentID)
			}
			if page.NextCursor == nil {
				return got
			}
			if len(page.Agents) != limit || *page.NextCursor != page.Agents[len(page.Agents)-1].AgentID {
				t.Fatalf("%s: nextCursor %q after a page of %d", query, *page.NextCursor, len(page.Agents))
			}
			cursor = *page.NextCursor
		}
	}
	for _, c := range []struct {
		query string
		limit int
		want  []string
	}{
		{"", 5, wa.all}, {"", 23, wa.all}, {"", 1000, wa.all},
		{"&tag=three", 2, wa.tagged}, {"&status=stopped", 1, wa.stopped}, {"&tag=none", 3, nil},
	} {
		if got := walk(c.query, c.limit); !slices.Equal(got, c.want) {
			t.Errorf("limit %d%s:\n got %v\nwant %v", c.limit, c.query, got, c.want)
		}
	}
	// A cursor naming an agent of another org, or none at all, still
	// starts after it.
	r := h.mustStatus(h.do(h.ts, "GET", "/api/v1/agents?limit=2&cursor="+"agp010"+b.ID[len(b.ID)-2:], a.Token, nil), 200)
	var page listAgentsResponse
	r.decode(t, &page)
	if len(page.Agents) != 2 || page.Agents[0].AgentID <= "agp010" {
		t.Errorf("after another org's agent: %+v", page.Agents)
	}
}
