package api

import (
	"io/fs"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestDashboardPagesAreServedSafely: / redirects to /app/; the sign-in and
// sign-up pages and the app shell (for any /app/ path) are served with a
// CSP that allows only the dashboard's own scripts and the agents'
// subdomains in frames, and no framing of the dashboard; assets with their
// types; unknown assets 404; writes are not allowed.
func TestDashboardPagesAreServedSafely(t *testing.T) {
	h := htNew(t, htOptions{})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) *http.Response {
		t.Helper()
		res, err := client.Get(h.ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	if res := get("/"); res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/app/" {
		t.Fatalf("/: %d %q", res.StatusCode, res.Header.Get("Location"))
	}
	for path, wantType := range map[string]string{
		"/app/": "text/html", "/app/signin": "text/html", "/app/signup": "text/html", "/app/tokens": "text/html",
		"/app/assets/app.js": "text/javascript", "/app/assets/app.css": "text/css",
	} {
		res := get(path)
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), wantType) {
			t.Errorf("%s: %d %q", path, res.StatusCode, res.Header.Get("Content-Type"))
		}
		csp := res.Header.Get("Content-Security-Policy")
		for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'", "frame-src http://*.agents.test:7480"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", path)
		}
	}
	// (Paths with .. are cleaned and redirected by the mux before this.)
	for _, path := range []string{"/app/assets/nope.js", "/app/assets/%2e%2e/signin.html", "/app/assets/"} {
		if res := get(path); res.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", path, res.StatusCode)
		}
	}
	res, err := client.Post(h.ts.URL+"/app/signin", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /app/signin: %d, want 405", res.StatusCode)
	}
}

// TestDashboardFilesAreSelfContainedAndLabelled: the pages load nothing
// from elsewhere (the CSP would refuse it anyway), and every form field of
// every page has a label.
func TestDashboardFilesAreSelfContainedAndLabelled(t *testing.T) {
	inputID := regexp.MustCompile(`<input[^>]*\bid="([^"]+)"`)
	fs.WalkDir(dashboardFiles, "dashboard", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(dashboardFiles, path)
		text := string(b)
		for _, banned := range []string{"http://", "https://", "//cdn", "@import", "eval(", "innerHTML"} {
			if strings.Contains(text, banned) {
				t.Errorf("%s contains %q", path, banned)
			}
		}
		if strings.HasSuffix(path, ".html") {
			for _, m := range inputID.FindAllStringSubmatch(text, -1) {
				if !strings.Contains(text, `<label for="`+m[1]+`"`) {
					t.Errorf("%s: input %q has no label", path, m[1])
				}
			}
			if !strings.Contains(text, `<meta name="viewport"`) || !strings.Contains(text, `<html lang="en">`) {
				t.Errorf("%s: no viewport or language", path)
			}
		}
		return nil
	})
}
