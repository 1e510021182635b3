package proxy

import (
	"bytes"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The fast path's request and answer heads are read by the two parsers
// here rather than by net/http's: those build a Request or Response, a
// header map and a string per field, several times the forwarding's own
// work. These parsers accept only a plain subset of HTTP/1.1 — anything
// else is left to net/http (the connection is handed over, or the answer
// read by http.ReadResponse) — and they are fuzzed against net/http's
// parser: whatever they accept, it accepts the same way.

var crlf = []byte("\r\n")

// fastRequestHead is a request head the fast path serves: slices of the
// head it was parsed from.
type fastRequestHead struct {
	method, uri, host []byte
	// forwardedFor are the client's own X-Forwarded-For values, which the
	// proxy extends with the client's address.
	forwardedFor [][]byte
	// lines are the header lines passed on as they came (without CRLF):
	// all but Host, hop-by-hop ones, the client's credentials and cookies,
	// and forwarding headers, which the proxy sets.
	lines [][]byte
	// noCache adds Cache-Control: no-cache, as net/http's server does for a
	// request with Pragma: no-cache and no Cache-Control.
	noCache bool
}

// parseRequestHead parses head (a request head ending in a blank line, its
// lines ending in CRLF, as headEnd found it) into h, and reports whether
// the fast path serves it: an HTTP/1.1 GET, HEAD or OPTIONS in origin form,
// with one Host, no body, and nothing asked of the connection but to be
// kept alive; every field one net/http's server accepts.
func parseRequestHead(head []byte, h *fastRequestHead) bool {
	h.forwardedFor, h.lines, h.noCache = h.forwardedFor[:0], h.lines[:0], false
	line, rest, _ := bytes.Cut(head, crlf)
	method, line, ok1 := bytes.Cut(line, []byte(" "))
	uri, proto, ok2 := bytes.Cut(line, []byte(" "))
	if !ok1 || !ok2 || string(proto) != "HTTP/1.1" || !originForm(uri) {
		return false
	}
	switch string(method) {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	h.method, h.uri = method, uri
	hosts := 0
	var cache pragmaRule
	for len(rest) > len(crlf) {
		line, rest, _ = bytes.Cut(rest, crlf)
		name, value, ok := headerField(line)
		if !ok {
			return false
		}
		cache.see(name, value)
		switch {
		case fieldIs(name, "Host"):
			hosts++
			h.host = value
			continue
		case fieldIs(name, "Content-Length"):
			if string(value) != "0" {
				return false
			}
		case fieldIs(name, "Transfer-Encoding"), fieldIs(name, "Upgrade"), fieldIs(name, "Expect"):
			return false
		case fieldIs(name, "Connection"):
			if !onlyKeepAlive(value) {
				return false // close, upgrade, or fields named hop-by-hop
			}
			continue
		case fieldIs(name, "X-Forwarded-For"):
			h.forwardedFor = append(h.forwardedFor, value)
			continue
		case droppedRequestField(name):
			continue
		}
		h.lines = append(h.lines, line)
	}
	h.noCache = cache.addsNoCache()
	return hosts == 1
}

// droppedRequestField reports whether a client's header field stays
// behind (see dropRequestHeader, its net/http path twin).
func droppedRequestField(name []byte) bool {
	for _, f := range []string{"Authorization", "Cookie", "Forwarded", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if fieldIs(name, f) {
			return true
		}
	}
	return hopField(name)
}

// hopField reports whether name is a hop-by-hop field (hopHeaders).
func hopField(name []byte) bool {
	for _, f := range hopHeaders {
		if fieldIs(name, f) {
			return true
		}
	}
	return false
}

// fastAnswer is an agent's answer head the fast path passes on itself.
type fastAnswer struct {
	status int
	// length is the body's length (Content-Length); -1 for a HEAD answer
	// that gave none.
	length int64
	close  bool
	date   bool
	// noCache adds Cache-Control: no-cache, as net/http's ReadResponse does
	// for an answer with Pragma: no-cache and no Cache-Control.
	noCache bool
	// lines are the header lines passed on as they came, without CRLF.
	lines [][]byte
}

// parseAnswerHead parses an agent's answer head (as headEnd found it) into
// a, and reports whether the fast path passes it on itself: HTTP/1.1, a
// final status with a body (not 1xx, 204 or 304), a Content-Length (none
// needed for HEAD), no transfer coding, not an event stream, a
// Content-Type (or Content-Encoding) for a body, and a Connection field
// that asks at most to close.
func parseAnswerHead(head []byte, toHEAD bool, a *fastAnswer) bool {
	a.length, a.close, a.date, a.noCache, a.lines = -1, false, false, false, a.lines[:0]
	var length []byte
	var cache pragmaRule
	typed, encoded := false, false
	line, rest, _ := bytes.Cut(head, crlf)
	proto, line, _ := bytes.Cut(line, []byte(" "))
	code, _, _ := bytes.Cut(line, []byte(" "))
	if string(proto) != "HTTP/1.1" || len(code) != 3 {
		return false
	}
	a.status = 0
	for _, c := range code {
		if c < '0' || c > '9' {
			return false
		}
		a.status = a.status*10 + int(c-'0')
	}
	if a.status < 200 || a.status == http.StatusNoContent || a.status == http.StatusNotModified || http.StatusText(a.status) == "" {
		return false
	}
	for len(rest) > len(crlf) {
		line, rest, _ = bytes.Cut(rest, crlf)
		name, value, ok := headerField(line)
		if !ok {
			return false
		}
		cache.see(name, value)
		switch {
		case fieldIs(name, "Content-Length"):
			n, ok := parseLength(value)
			if !ok || length != nil && !bytes.Equal(value, length) {
				return false // net/http wants repeated lengths written alike
			}
			a.length, length = n, value
			continue
		case fieldIs(name, "Transfer-Encoding"):
			return false
		case fieldIs(name, "Connection"):
			for f := range bytes.SplitSeq(value, []byte(",")) {
				switch f = bytes.Trim(f, " \t"); {
				case fieldIs(f, "close"):
					a.close = true
				case len(f) > 0 && !fieldIs(f, "keep-alive"):
					return false // fields named hop-by-hop
				}
			}
			continue
		case fieldIs(name, "Content-Type"):
			if len(value) >= len("text/event-stream") && fieldIs(value[:len("text/event-stream")], "text/event-stream") {
				return false // a stream: flushed as it comes, by the general path
			}
			typed = true
		case fieldIs(name, "Content-Encoding"):
			encoded = encoded || len(value) > 0
		case fieldIs(name, "Date"):
			a.date = true
		case hopField(name):
			continue
		}
		a.lines = append(a.lines, line)
	}
	a.noCache = cache.addsNoCache()
	if !typed && !encoded && a.length > 0 && !toHEAD {
		return false // net/http's server would sniff a Content-Type: the general path does
	}
	return a.length >= 0 || toHEAD
}

// pragmaRule follows net/http's parsers, which add Cache-Control: no-cache
// to a request or answer whose first Pragma field is no-cache and that has
// no Cache-Control.
type pragmaRule struct{ pragma, noCache, cacheControl bool }

// see takes in one header field.
func (r *pragmaRule) see(name, value []byte) {
	switch {
	case fieldIs(name, "Pragma") && !r.pragma:
		r.pragma, r.noCache = true, string(value) == "no-cache"
	case fieldIs(name, "Cache-Control"):
		r.cacheControl = true
	}
}

func (r *pragmaRule) addsNoCache() bool { return r.noCache && !r.cacheControl }

// headerField splits a header line into its name and value (without
// surrounding spaces), and reports whether both are valid: a token for a
// name, no control characters but tabs in a value.
func headerField(line []byte) (name, value []byte, ok bool) {
	name, value, ok = bytes.Cut(line, []byte(":"))
	if !ok || len(name) == 0 {
		return nil, nil, false
	}
	for _, c := range name {
		if !httpguts.IsTokenRune(rune(c)) {
			return nil, nil, false
		}
	}
	value = bytes.Trim(value, " \t")
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, nil, false
		}
	}
	return name, value, true
}

// fieldIs compares a field name or token, case-insensitively (ASCII).
func fieldIs(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// onlyKeepAlive reports whether a Connection value asks for nothing but a
// kept-alive connection.
func onlyKeepAlive(value []byte) bool {
	for f := range bytes.SplitSeq(value, []byte(",")) {
		if f = bytes.Trim(f, " \t"); len(f) > 0 && !fieldIs(f, "keep-alive") {
			return false
		}
	}
	return true
}

// parseLength parses a Content-Length value: digits only, at most 18.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// originForm reports whether uri is an origin-form request target made of
// characters URLs allow unescaped (RFC 3986) and well-formed %-escapes: a
// subset of what net/http's server accepts, passed on as it is.
func originForm(uri []byte) bool {
	if len(uri) == 0 || uri[0] != '/' {
		return false
	}
	for i := 0; i < len(uri); i++ {
		c := uri[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@/?", c) >= 0:
		case c == '%' && i+2 < len(uri) && isHex(uri[i+1]) && isHex(uri[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
