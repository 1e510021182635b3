package opencode

import "testing"

func TestPlaceholderTitlesAreUntitled(t *testing.T) {
	for title, want := range map[string]string{
		"New session - 2026-11-23T19:14:16.506Z":   "",
		"Child session - 2026-11-23T19:14:16.506Z": "",
		"Build REST API":         "Build REST API",
		"New session - my notes": "New session - my notes",
		"":                       "",
	} {
		if got := (ocSession{Title: title}).session().Title; got != want {
			t.Errorf("title %q → %q, want %q", title, got, want)
		}
	}
}
