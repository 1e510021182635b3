package api

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// The web dashboard: plain HTML, CSS and JavaScript modules embedded in the
// binary (no front-end build step), served by every control node under
// /app/ and calling this same REST API with the session cookie. The edge
// proxy forwards the apex's /app/ (and / , which redirects here) to the
// control nodes as it does /api/.

//go:embed dashboard
var dashboardFiles embed.FS

// dashboardPages are the documents by path; every other /app/ path is the
// app shell (index.html), whose script routes by path.
var dashboardPages = map[string]string{
	"/app/signin": "dashboard/signin.html",
	"/app/signup": "dashboard/signup.html",
}

// dashboardCSP keeps the pages to their own scripts and styles, lets them
// frame agents' own UIs (on the agents' subdomains) and no one frame them.
func dashboardCSP(agentHosts string) string {
	return "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
		"frame-src " + agentHosts + "; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
}

// serveDashboard serves GET and HEAD of /, /app/ and below.
func (s *Server) serveDashboard(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == "/" || r.URL.Path == "/app" {
		http.Redirect(w, r, "/app/", http.StatusFound)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", dashboardCSP(s.agentFrameSources()))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	if name, ok := strings.CutPrefix(r.URL.Path, "/app/assets/"); ok {
		b, err := fs.ReadFile(dashboardFiles, "dashboard/assets/"+path.Clean("/" + name)[1:])
		if err != nil {
			http.NotFound(w, r)
			return
		}
		switch path.Ext(name) {
		case ".js":
			h.Set("Content-Type", "text/javascript; charset=utf-8")
		case ".css":
			h.Set("Content-Type", "text/css; charset=utf-8")
		}
		h.Set("Cache-Control", "no-cache")
		w.Write(b)
		return
	}
	page, ok := dashboardPages[r.URL.Path]
	if !ok {
		page = "dashboard/index.html"
	}
	b, err := fs.ReadFile(dashboardFiles, page)
	if err != nil {
		http.Error(w, "page missing", http.StatusInternalServerError)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	w.Write(b)
}

// agentFrameSources is where agents' own UIs live, for the CSP: any
// subdomain of the public URL's host, on its scheme.
func (s *Server) agentFrameSources() string {
	u := s.cfg.PublicURL
	return u.Scheme + "://*." + u.Host
}
