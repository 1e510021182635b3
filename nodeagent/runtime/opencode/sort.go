package opencode

import (
	"cmp"
	"slices"

	"github.com/agenthost/agenthost/nodeagent/runtime"
)

func sortSessions(s []runtime.Session) {
	slices.SortFunc(s, func(a, b runtime.Session) int {
		return cmp.Or(cmp.Compare(a.Created, b.Created), cmp.Compare(a.ID, b.ID))
	})
}

func sortStrings(s []string) { slices.Sort(s) }
