package api

import (
	"io/fs"
	"net/http"
	"path"
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
	pages := map[string]string{
		"/app/": "text/html", "/app/signin": "text/html", "/app/signup": "text/html", "/app/tokens": "text/html",
		"/app/scopes": "text/html", "/app/scopes/scp_1": "text/html",
	}
	// Every asset is served, with its type: a module served as anything
	// but JavaScript does not run, and the page is blank.
	for name, wantType := range dashboardAssets(t) {
		pages["/app/assets/"+name] = wantType
	}
	for path, wantType := range pages {
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

// dashboardAssets is the embedded assets by name, with the Content-Type
// each must be served with.
func dashboardAssets(t *testing.T) map[string]string {
	t.Helper()
	types := map[string]string{".js": "text/javascript", ".css": "text/css"}
	assets := map[string]string{}
	err := fs.WalkDir(dashboardFiles, "dashboard/assets", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		wantType, ok := types[path.Ext(name)]
		if !ok {
			t.Errorf("%s: an asset of a type the dashboard does not serve", name)
		}
		assets[strings.TrimPrefix(name, "dashboard/assets/")] = wantType
		return nil
	})
	if err != nil || len(assets) == 0 {
		t.Fatalf("the embedded assets: %v %v", assets, err)
	}
	return assets
}

// TestDashboardModulesResolve: every module a page loads or a module
// imports (or loads lazily) is an embedded asset, exports the names imported from it, and
// every module is used; a broken import would leave the dashboard blank.
func TestDashboardModulesResolve(t *testing.T) {
	importRe := regexp.MustCompile(`(?m)^import\s*\{([^}]*)\}\s*from\s*"([^"]+)";`)
	// The shell loads views with their page: lazy("/app/assets/x.js", "xView").
	lazyRe := regexp.MustCompile(`\blazy\("([^"]+)", "(\w+)"\)`)
	exportRe := regexp.MustCompile(`(?m)^export\s+(?:async\s+)?(?:function|class|const|let)\s+(\w+)`)
	loadRe := regexp.MustCompile(`<(?:script type="module" src|link rel="stylesheet" href)="([^"]+)"`)
	read := func(name string) string {
		t.Helper()
		b, err := fs.ReadFile(dashboardFiles, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return string(b)
	}
	// asset is the embedded file of a URL path the pages use.
	asset := func(from, url string) (string, bool) {
		name, ok := strings.CutPrefix(url, "/app/assets/")
		if _, err := fs.Stat(dashboardFiles, "dashboard/assets/"+name); !ok || err != nil {
			t.Errorf("%s loads %s, which is no embedded asset", from, url)
			return "", false
		}
		return name, true
	}
	used := map[string]bool{}
	pages, _ := fs.Glob(dashboardFiles, "dashboard/*.html")
	for _, page := range pages {
		for _, m := range loadRe.FindAllStringSubmatch(read(page), -1) {
			if name, ok := asset(page, m[1]); ok {
				used[name] = true
			}
		}
	}
	for name := range dashboardAssets(t) {
		if path.Ext(name) != ".js" {
			continue
		}
		src := read("dashboard/assets/" + name)
		imports := importRe.FindAllStringSubmatch(src, -1)
		for _, m := range lazyRe.FindAllStringSubmatch(src, -1) {
			imports = append(imports, []string{m[0], m[2], m[1]})
		}
		for _, m := range imports {
			target, ok := asset(name, m[2])
			if !ok {
				continue
			}
			used[target] = true
			exported := map[string]bool{}
			for _, e := range exportRe.FindAllStringSubmatch(read("dashboard/assets/"+target), -1) {
				exported[e[1]] = true
			}
			for _, imported := range strings.Split(m[1], ",") {
				imported, _, _ = strings.Cut(strings.TrimSpace(imported), " as ")
				if imported != "" && !exported[imported] {
					t.Errorf("%s imports %s from %s, which does not export it", name, imported, target)
				}
			}
		}
	}
	for name := range dashboardAssets(t) {
		if !used[name] {
			t.Errorf("%s: no page or module loads it", name)
		}
	}
}

// TestDashboardFilesAreSelfContainedAndLabelled: the pages load nothing
// from elsewhere (the CSP would refuse it anyway) and have no inline
// styles, every form field of every page has a label, and the app shell
// starts with a link that skips to its content.
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
		// The CSP's style-src 'self' refuses inline styles: the pages use
		// the stylesheet's classes. Editing is in forms, never prompt().
		if !strings.HasSuffix(path, ".css") {
			for _, banned := range []string{"style=", "<style", ".style", `"style"`, "prompt("} {
				if strings.Contains(text, banned) {
					t.Errorf("%s contains %q", path, banned)
				}
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
			if path == "dashboard/index.html" && (!strings.Contains(text, "<body>\n<a class=\"skip\" href=\"#view\">") || !strings.Contains(text, `<main id="view"`)) {
				t.Errorf("%s: no skip link first in the body to main#view", path)
			}
		}
		return nil
	})
}
