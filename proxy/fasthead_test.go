package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// The fast path's head parsers (fasthead.go) promise that whatever they
// accept, net/http's parser accepts the same way. The fuzz targets here
// check that promise against http.ReadRequest and http.ReadResponse; the
// table tests pin the notable cases down.

// requestSeeds are request heads (and some with a body after the head)
// for FuzzParseRequestHead and TestParseRequestHeadCases.
var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET /index.html?q=1&r=%20x HTTP/1.1\r\nHost: a10042.example.com\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n",
	"HEAD /a/b HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
	"OPTIONS /x HTTP/1.1\r\nHost: example.com\r\nOrigin: http://o\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: Keep-Alive, keep-alive\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Foo\r\nX-Foo: 1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: b.example.com\r\n\r\n",
	"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n",
	"GET / HTTP/1.1\r\nhost: example.com\r\nuser-agent: x\r\naccept-ENCODING: gzip\r\n\r\n",
	"GET / HTTP/1.1\r\nHost:   example.com \t\r\nX-Empty:\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nPragma: no-cache\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nPragma: no-cache\r\nCache-Control: max-age=0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nCache-Control: no-store\r\nPragma: no-cache\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nPragma: x\r\nPragma: no-cache\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nPragma: no-cache\r\nPragma: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nPragma: No-Cache\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8, 9.9.9.9\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\nForwarded: for=1.2.3.4\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nAuthorization: Basic Zm9vOmJhcg==\r\nCookie: a=b\r\nProxy-Authorization: x\r\nTe: trailers\r\nKeep-Alive: timeout=5\r\nTrailer: X\r\nProxy-Connection: keep-alive\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello",
	"GET / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\n\r\n",
	"GET /%zz HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET /%2F HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET /a%2 HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET /?q=%zz HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET //x/../y;p=1:@!$&'()*+,=~ HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n",
	"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nX-Foo : bar\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nX-Foo: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nX-Foo: a\r\n\tb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nX-Foo: a\x01b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nX-Foo: a\x7fb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nX-Foo: a\tb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nX-Foo: a\rb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nX-Foo: caf\xc3\xa9 \xff\r\n\r\n",
	"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: ex\xc3\xa4mple.com\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nX-F\xc3\xb6o: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\n: empty name\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n",
	"get / HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET  / HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET / HTTP/1.1 \r\nHost: example.com\r\n\r\n",
	"GET / HTTP/1.1\r\n Host: example.com\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\xc2\xa0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: example.com\r\n\r\nGET /next HTTP/1.1\r\nHost: example.com\r\n\r\n",
}

func FuzzParseRequestHead(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	var h fastRequestHead
	f.Fuzz(func(t *testing.T, raw []byte) {
		end := headEnd(raw)
		if end <= 0 {
			return
		}
		head := raw[:end]
		if !parseRequestHead(head, &h) {
			return
		}
		checkRequestHead(t, head, &h)
	})
}

// requestDropped are the request fields parseRequestHead passes on
// neither in lines nor otherwise as they came (Host is h.host).
var requestDropped = []string{
	"Host",
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Authorization", "Cookie", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
}

// answerDropped are the answer fields parseAnswerHead does not keep in
// lines (Content-Length is a.length).
var answerDropped = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Content-Length",
}

// checkRequestHead checks a head parseRequestHead accepted (into h)
// against http.ReadRequest and what net/http's server checks.
func checkRequestHead(t *testing.T, head []byte, h *fastRequestHead) {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		t.Fatalf("parseRequestHead accepted %q, http.ReadRequest: %v", head, err)
	}
	if req.Method != string(h.method) {
		t.Errorf("method %q, net/http %q", h.method, req.Method)
	}
	if req.RequestURI != string(h.uri) {
		t.Errorf("uri %q, net/http %q", h.uri, req.RequestURI)
	}
	if _, err := url.ParseRequestURI(string(h.uri)); err != nil {
		t.Errorf("uri %q: url.ParseRequestURI: %v", h.uri, err)
	}
	if req.URL.Host != "" {
		t.Errorf("uri %q has a host for net/http: %q", h.uri, req.URL.Host)
	}
	if req.Host != string(h.host) {
		t.Errorf("host %q, net/http %q", h.host, req.Host)
	}
	if req.ProtoMajor != 1 || req.ProtoMinor != 1 {
		t.Errorf("net/http reads HTTP/%d.%d", req.ProtoMajor, req.ProtoMinor)
	}
	if req.ContentLength != 0 || len(req.TransferEncoding) != 0 {
		t.Errorf("net/http reads a body: length %d, transfer encoding %q", req.ContentLength, req.TransferEncoding)
	}
	if req.Close {
		t.Errorf("net/http closes the connection after it")
	}
	for _, k := range []string{"Upgrade", "Expect", "Transfer-Encoding"} {
		if vs, ok := req.Header[k]; ok {
			t.Errorf("net/http has %s: %q", k, vs)
		}
	}
	// What net/http's server checks of every field.
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			t.Errorf("net/http's server rejects field name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				t.Errorf("net/http's server rejects %s value %q", k, v)
			}
		}
	}

	// The fields as they came (before net/http adds Cache-Control from
	// Pragma): h.noCache says whether net/http adds it.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(head)))
	if _, err := tp.ReadLine(); err != nil {
		t.Fatal(err)
	}
	fields, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatalf("textproto.ReadMIMEHeader: %v", err)
	}
	// net/http's server wants exactly one Host for HTTP/1.1 (ReadRequest
	// takes it out of req.Header).
	if hosts := fields["Host"]; len(hosts) != 1 || hosts[0] != string(h.host) {
		t.Errorf("host %q, net/http's Host fields %q", h.host, hosts)
	}
	wantNoCache := len(fields["Pragma"]) > 0 && fields["Pragma"][0] == "no-cache" && len(fields["Cache-Control"]) == 0
	if h.noCache != wantNoCache {
		t.Errorf("noCache %v, net/http adds Cache-Control: no-cache: %v (Pragma %q, Cache-Control %q)",
			h.noCache, wantNoCache, fields["Pragma"], fields["Cache-Control"])
	}
	if h.noCache && !slices.Equal(req.Header["Cache-Control"], []string{"no-cache"}) {
		t.Errorf("noCache, net/http's Cache-Control %q", req.Header["Cache-Control"])
	}

	// Passed on: the fields in lines, in order, are net/http's.
	passed := headerOfLines(t, h.lines)
	for k, vs := range passed {
		if slices.Contains(requestDropped, k) {
			t.Errorf("lines have %s %q, a field not passed on", k, vs)
		}
		want := req.Header[k]
		if k == "Content-Length" {
			vs = slices.Compact(vs) // net/http keeps one of equal lengths
		}
		if !slices.Equal(vs, want) {
			t.Errorf("lines have %s %q, net/http %q", k, vs, want)
		}
	}
	if !slices.Equal(headerStrings(h.forwardedFor), req.Header["X-Forwarded-For"]) {
		t.Errorf("forwardedFor %q, net/http %q", h.forwardedFor, req.Header["X-Forwarded-For"])
	}
	// And net/http has no others than those dropped on purpose.
	for k, vs := range req.Header {
		if _, ok := passed[k]; ok || slices.Contains(requestDropped, k) || k == "Cache-Control" && h.noCache {
			continue
		}
		t.Errorf("net/http has %s %q, not in lines", k, vs)
	}
}

// headerOfLines makes a header of header lines, as net/http would read
// them: canonical keys, values trimmed.
func headerOfLines(t *testing.T, lines [][]byte) http.Header {
	t.Helper()
	hdr := http.Header{}
	for _, line := range lines {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			t.Errorf("line %q has no colon", line)
			continue
		}
		k := http.CanonicalHeaderKey(string(name))
		hdr[k] = append(hdr[k], string(bytes.Trim(value, " \t")))
	}
	return hdr
}

func headerStrings(bs [][]byte) []string {
	var ss []string
	for _, b := range bs {
		ss = append(ss, string(b))
	}
	return ss
}

// answerSeeds are answer heads (some with a body) for FuzzParseAnswerHead
// and TestParseAnswerHeadCases.
var answerSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 0\r\nETag: \"x\"\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
	"HTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"HTTP/1.1 200 OK\r\nContent-Length: 005\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Foo\r\nX-Foo: bar\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 6\r\n\r\ndata:\n",
	"HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\n\r\n",
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 299 Whatever\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 599 Whatever\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 600 Whatever\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 511 Network Authentication Required\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
	"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Foo : x\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-F(o): x\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Foo: a\r\n b\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Foo: a\x00b\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Foo: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTe: trailers\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n",
	// Found by review, each once a disagreement: net/http adds
	// Cache-Control to answers too, compares repeated lengths as written,
	// and trims only spaces and tabs from Connection's tokens.
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nCache-Control: max-age=5\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\xc2\xa0\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: \xc2\x85close\r\n\r\nok",
}

func FuzzParseAnswerHead(f *testing.F) {
	for _, s := range answerSeeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	var a fastAnswer
	f.Fuzz(func(t *testing.T, raw []byte, isHEAD bool) {
		end := headEnd(raw)
		if end <= 0 {
			return
		}
		head := raw[:end]
		if !parseAnswerHead(head, isHEAD, &a) {
			return
		}
		checkAnswerHead(t, raw, head, isHEAD, &a)
	})
}

// checkAnswerHead checks a head parseAnswerHead accepted (into a) against
// http.ReadResponse of raw, the head and what follows.
func checkAnswerHead(t *testing.T, raw, head []byte, isHEAD bool, a *fastAnswer) {
	t.Helper()
	method := http.MethodGet
	if isHEAD {
		method = http.MethodHead
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("parseAnswerHead(isHEAD %v) accepted %q, http.ReadResponse: %v", isHEAD, head, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != a.status {
		t.Errorf("status %d, net/http %d", a.status, resp.StatusCode)
	}
	if a.status < 200 || a.status == http.StatusNoContent || a.status == http.StatusNotModified {
		t.Errorf("status %d has no body", a.status)
	}
	if resp.ProtoMajor != 1 || resp.ProtoMinor != 1 {
		t.Errorf("net/http reads HTTP/%d.%d", resp.ProtoMajor, resp.ProtoMinor)
	}
	if len(resp.TransferEncoding) != 0 {
		t.Errorf("net/http reads transfer encoding %q", resp.TransferEncoding)
	}
	if resp.Close != a.close {
		t.Errorf("close %v, net/http %v", a.close, resp.Close)
	}
	// For HEAD, net/http's ContentLength is the Content-Length field's too.
	if resp.ContentLength != a.length {
		t.Errorf("length %d, net/http %d", a.length, resp.ContentLength)
	}
	cl := resp.Header["Content-Length"]
	switch {
	case a.length < 0 && len(cl) != 0:
		t.Errorf("no length, net/http's Content-Length %q", cl)
	case a.length < 0 && !isHEAD:
		t.Errorf("no length for a GET")
	case a.length >= 0:
		if n, err := strconv.ParseInt(strings.Join(cl, ","), 10, 64); err != nil || n != a.length {
			t.Errorf("length %d, net/http's Content-Length %q", a.length, cl)
		}
	}
	for _, ct := range resp.Header["Content-Type"] {
		if strings.HasPrefix(strings.ToLower(ct), "text/event-stream") {
			t.Errorf("passes on an event stream: Content-Type %q", ct)
		}
	}
	if _, ok := resp.Header["Date"]; a.date != ok {
		t.Errorf("date %v, net/http's Date %q", a.date, resp.Header["Date"])
	}
	if _, typed := resp.Header["Content-Type"]; !isHEAD && a.length > 0 && !typed && resp.Header.Get("Content-Encoding") == "" {
		t.Errorf("passes on a body with no type, which net/http's server would sniff one for")
	}
	if a.noCache && !slices.Equal(resp.Header["Cache-Control"], []string{"no-cache"}) {
		t.Errorf("noCache, net/http's Cache-Control %q", resp.Header["Cache-Control"])
	}
	passed := headerOfLines(t, a.lines)
	if _, ok := passed["Cache-Control"]; !a.noCache && !ok && len(resp.Header["Cache-Control"]) > 0 {
		t.Errorf("net/http adds Cache-Control %q, the parser does not", resp.Header["Cache-Control"])
	}
	for k, vs := range passed {
		if slices.Contains(answerDropped, k) {
			t.Errorf("lines have %s %q, a field not passed on", k, vs)
		}
		if want := resp.Header[k]; !slices.Equal(vs, want) {
			t.Errorf("lines have %s %q, net/http %q", k, vs, want)
		}
	}
	for k, vs := range resp.Header {
		if _, ok := passed[k]; ok || slices.Contains(answerDropped, k) || k == "Cache-Control" && a.noCache {
			continue
		}
		t.Errorf("net/http has %s %q, not in lines", k, vs)
	}
}

func TestHeadEnd(t *testing.T) {
	const get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	for _, tc := range []struct {
		buf  string
		want int
	}{
		{get, len(get)},
		{get + "body", len(get)},
		{get + get, len(get)},
		{get + "X\n", len(get)},
		{"HTTP/1.1 200 OK\r\n\r\n", 19},
		{"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 26},
		{"", 0},
		{"G", 0},
		{"GET / HTTP/1.1", 0},
		{"GET / HTTP/1.1\r", 0},
		{"GET / HTTP/1.1\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: a\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r", 0},
		{"GET / HTTP/1.1\nHost: a\r\n\r\n", -1},
		{"GET / HTTP/1.1\r\nHost: a\n\r\n", -1},
		{"GET / HTTP/1.1\r\nHost: a\r\n\n", -1},
		{"GET / HTTP/1.1\r\nHost: a\r\n\n\r\n", -1},
		{"\n", -1},
		{"\r\n", -1},
		{"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", -1},
		{"\r\n\r\n", -1},
		{"\nGET", -1},
	} {
		if got := headEnd([]byte(tc.buf)); got != tc.want {
			t.Errorf("headEnd(%q) = %d, want %d", tc.buf, got, tc.want)
		}
	}
}

func TestParseRequestHeadCases(t *testing.T) {
	type want struct {
		ok                bool
		method, uri, host string
		lines, xff        []string
		noCache           bool
	}
	get := func(lines ...string) want {
		return want{ok: true, method: "GET", uri: "/", host: "example.com", lines: lines}
	}
	no := want{}
	const host = "Host: example.com\r\n"
	for _, tc := range []struct {
		name, head string
		want       want
	}{
		{"plain GET", "GET / HTTP/1.1\r\n" + host + "User-Agent: t\r\nAccept: */*\r\n\r\n",
			get("User-Agent: t", "Accept: */*")},
		{"HEAD with query", "HEAD /index.html?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
			want{ok: true, method: "HEAD", uri: "/index.html?q=1", host: "example.com:8080"}},
		{"OPTIONS", "OPTIONS /x HTTP/1.1\r\n" + host + "Origin: http://o\r\n\r\n",
			want{ok: true, method: "OPTIONS", uri: "/x", host: "example.com", lines: []string{"Origin: http://o"}}},
		{"keep-alive", "GET / HTTP/1.1\r\n" + host + "Connection: keep-alive\r\n\r\n", get()},
		{"keep-alive twice", "GET / HTTP/1.1\r\n" + host + "Connection: Keep-Alive, keep-alive,\r\n\r\n", get()},
		{"close", "GET / HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n", no},
		{"keep-alive and a field", "GET / HTTP/1.1\r\n" + host + "Connection: keep-alive, X-Foo\r\n\r\n", no},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", no},
		{"two equal hosts", "GET / HTTP/1.1\r\n" + host + host + "\r\n", no},
		{"no host", "GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n", no},
		{"no fields", "GET / HTTP/1.1\r\n\r\n", no},
		{"lowercase names", "GET / HTTP/1.1\r\nhost: example.com\r\nuser-agent: t\r\n\r\n", get("user-agent: t")},
		{"host trimmed", "GET / HTTP/1.1\r\nHost: \t example.com \t\r\nX-Empty:\r\n\r\n", get("X-Empty:")},
		{"pragma", "GET / HTTP/1.1\r\n" + host + "Pragma: no-cache\r\n\r\n",
			want{ok: true, method: "GET", uri: "/", host: "example.com", lines: []string{"Pragma: no-cache"}, noCache: true}},
		{"pragma and cache-control", "GET / HTTP/1.1\r\n" + host + "Pragma: no-cache\r\ncache-control: max-age=0\r\n\r\n",
			get("Pragma: no-cache", "cache-control: max-age=0")},
		{"second pragma", "GET / HTTP/1.1\r\n" + host + "Pragma: x\r\nPragma: no-cache\r\n\r\n",
			get("Pragma: x", "Pragma: no-cache")},
		{"first pragma", "GET / HTTP/1.1\r\n" + host + "pragma:  no-cache \r\nPragma: x\r\n\r\n",
			want{ok: true, method: "GET", uri: "/", host: "example.com", lines: []string{"pragma:  no-cache ", "Pragma: x"}, noCache: true}},
		{"pragma case", "GET / HTTP/1.1\r\n" + host + "Pragma: No-Cache\r\n\r\n", get("Pragma: No-Cache")},
		{"forwarded for", "GET / HTTP/1.1\r\n" + host + "X-Forwarded-For: 1.2.3.4\r\nx-forwarded-for:  5.6.7.8, 9.9.9.9\r\n\r\n",
			want{ok: true, method: "GET", uri: "/", host: "example.com", xff: []string{"1.2.3.4", "5.6.7.8, 9.9.9.9"}}},
		{"dropped", "GET / HTTP/1.1\r\n" + host + "Authorization: Basic eA==\r\nCookie: a=b\r\nForwarded: for=x\r\n" +
			"X-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\nProxy-Authorization: x\r\nTe: trailers\r\n" +
			"Keep-Alive: timeout=5\r\nTrailer: X\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n", get("Accept: */*")},
		{"length 0", "GET / HTTP/1.1\r\n" + host + "Content-Length: 0\r\n\r\n", get("Content-Length: 0")},
		{"length 5", "GET / HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\n", no},
		{"length 00", "GET / HTTP/1.1\r\n" + host + "Content-Length: 00\r\n\r\n", no},
		{"chunked", "GET / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n", no},
		{"upgrade", "GET / HTTP/1.1\r\n" + host + "Upgrade: websocket\r\n\r\n", no},
		{"expect", "GET / HTTP/1.1\r\n" + host + "Expect: 100-continue\r\n\r\n", no},
		{"bad escape", "GET /%zz HTTP/1.1\r\n" + host + "\r\n", no},
		{"short escape", "GET /a%2 HTTP/1.1\r\n" + host + "\r\n", no},
		{"bad escape in query", "GET /?q=%zz HTTP/1.1\r\n" + host + "\r\n", no},
		{"escaped slash", "GET /%2F HTTP/1.1\r\n" + host + "\r\n",
			want{ok: true, method: "GET", uri: "/%2F", host: "example.com"}},
		{"sub-delims", "GET //a/../b;p=1:@!$&'()*+,=~?x=/? HTTP/1.1\r\n" + host + "\r\n",
			want{ok: true, method: "GET", uri: "//a/../b;p=1:@!$&'()*+,=~?x=/?", host: "example.com"}},
		{"fragment", "GET /#x HTTP/1.1\r\n" + host + "\r\n", no},
		{"absolute form", "GET http://example.com/ HTTP/1.1\r\n" + host + "\r\n", no},
		{"asterisk", "OPTIONS * HTTP/1.1\r\n" + host + "\r\n", no},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n" + host + "\r\n", no},
		{"HTTP/2.0", "GET / HTTP/2.0\r\n" + host + "\r\n", no},
		{"POST", "POST / HTTP/1.1\r\n" + host + "Content-Length: 0\r\n\r\n", no},
		{"lowercase method", "get / HTTP/1.1\r\n" + host + "\r\n", no},
		{"two spaces", "GET  / HTTP/1.1\r\n" + host + "\r\n", no},
		{"trailing space", "GET / HTTP/1.1 \r\n" + host + "\r\n", no},
		{"space before colon", "GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", no},
		{"space before colon, other", "GET / HTTP/1.1\r\n" + host + "X-Foo : bar\r\n\r\n", no},
		{"obs-fold", "GET / HTTP/1.1\r\n" + host + "X-Foo: a\r\n b\r\n\r\n", no},
		{"obs-fold with tab", "GET / HTTP/1.1\r\n" + host + "X-Foo: a\r\n\tb\r\n\r\n", no},
		{"leading space", "GET / HTTP/1.1\r\n " + host + "\r\n", no},
		{"control byte", "GET / HTTP/1.1\r\n" + host + "X-Foo: a\x01b\r\n\r\n", no},
		{"DEL", "GET / HTTP/1.1\r\n" + host + "X-Foo: a\x7f\r\n\r\n", no},
		{"CR", "GET / HTTP/1.1\r\n" + host + "X-Foo: a\rb\r\n\r\n", no},
		{"NUL in host", "GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n", no},
		{"tab", "GET / HTTP/1.1\r\n" + host + "X-Foo: a\tb\r\n\r\n", get("X-Foo: a\tb")},
		{"non-ASCII value", "GET / HTTP/1.1\r\n" + host + "X-Foo: caf\xc3\xa9 \xff\r\n\r\n", get("X-Foo: caf\xc3\xa9 \xff")},
		{"non-ASCII name", "GET / HTTP/1.1\r\n" + host + "X-F\xc3\xb6o: a\r\n\r\n", no},
		{"non-ASCII uri", "GET /caf\xc3\xa9 HTTP/1.1\r\n" + host + "\r\n", no},
		{"empty name", "GET / HTTP/1.1\r\n" + host + ": x\r\n\r\n", no},
		{"no colon", "GET / HTTP/1.1\r\n" + host + "X-Foo\r\n\r\n", no},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h fastRequestHead
			ok := parseRequestHead([]byte(tc.head), &h)
			if ok != tc.want.ok {
				t.Fatalf("parseRequestHead(%q) = %v, want %v", tc.head, ok, tc.want.ok)
			}
			if !ok {
				return
			}
			got := want{ok: true, method: string(h.method), uri: string(h.uri), host: string(h.host),
				lines: headerStrings(h.lines), xff: headerStrings(h.forwardedFor), noCache: h.noCache}
			if got.method != tc.want.method || got.uri != tc.want.uri || got.host != tc.want.host ||
				!slices.Equal(got.lines, tc.want.lines) || !slices.Equal(got.xff, tc.want.xff) || got.noCache != tc.want.noCache {
				t.Errorf("parseRequestHead(%q):\n got %+v\nwant %+v", tc.head, got, tc.want)
			}
			checkRequestHead(t, []byte(tc.head), &h)
		})
	}
}

func TestParseAnswerHeadCases(t *testing.T) {
	type want struct {
		ok          bool
		status      int
		length      int64
		close, date bool
		lines       []string
	}
	no := want{}
	const date = "Date: Mon, 02 Jan 2006 15:04:05 GMT"
	for _, tc := range []struct {
		name, head string
		isHEAD     bool
		want       want
	}{
		{"200", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n" + date + "\r\n\r\n", false,
			want{true, 200, 5, false, true, []string{"Content-Type: text/plain", date}}},
		{"no reason", "HTTP/1.1 200\r\nContent-Type: a/b\r\nContent-Length: 2\r\n\r\n", false,
			want{true, 200, 2, false, false, []string{"Content-Type: a/b"}}},
		// net/http's server sniffs a type for a body without one: the
		// general path writes those.
		{"no type", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", false, no},
		{"no type, encoded", "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n", false,
			want{true, 200, 2, false, false, []string{"Content-Encoding: gzip"}}},
		{"no type, empty encoding", "HTTP/1.1 200 OK\r\nContent-Encoding:\r\nContent-Length: 2\r\n\r\n", false, no},
		{"no type, no body", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, want{true, 200, 0, false, false, nil}},
		{"404", "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false, want{true, 404, 0, false, false, nil}},
		{"511", "HTTP/1.1 511 Network Authentication Required\r\nContent-Length: 0\r\n\r\n", false,
			want{true, 511, 0, false, false, nil}},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", false, no},
		{"204 with length", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false, no},
		{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n", false, no},
		{"101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", false, no},
		{"103", "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n", false, no},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, no},
		{"chunked with length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false, no},
		{"two equal lengths", "HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nContent-Length: 5\r\ncontent-length:  5\r\n\r\n", false,
			want{true, 200, 5, false, false, []string{"Content-Type: a/b"}}},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false, no},
		{"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, no},
		{"empty length", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", false, no},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", false, no},
		{"long length", "HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n\r\n", false, no},
		{"no length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", false, no},
		{"HEAD, no length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", true,
			want{true, 200, -1, false, false, []string{"Content-Type: text/plain"}}},
		{"HEAD, length", "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", true, want{true, 200, 1234, false, false, nil}},
		{"close", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", false,
			want{true, 200, 0, true, false, nil}},
		{"keep-alive, close", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive, CLOSE\r\nKeep-Alive: timeout=5\r\n\r\n", false,
			want{true, 200, 0, true, false, nil}},
		{"keep-alive", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", false,
			want{true, 200, 0, false, false, nil}},
		{"connection names a field", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Foo\r\nX-Foo: bar\r\n\r\n", false, no},
		{"event stream", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 6\r\n\r\n", false, no},
		{"event stream, case", "HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\n\r\n", true, no},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false, no},
		{"299", "HTTP/1.1 299 Whatever\r\nContent-Length: 0\r\n\r\n", false, no},
		{"599", "HTTP/1.1 599 Whatever\r\nContent-Length: 0\r\n\r\n", false, no},
		{"600", "HTTP/1.1 600 Whatever\r\nContent-Length: 0\r\n\r\n", false, no},
		{"2x0", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", false, no},
		{"2000", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", false, no},
		{"two spaces", "HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n", false, no},
		{"repeated field", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: 1\r\nx-a: 2\r\n\r\n", false,
			want{true, 200, 0, false, false, []string{"X-A: 1", "x-a: 2"}}},
		{"hop-by-hop", "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTe: trailers\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n", false,
			want{true, 200, 0, false, false, nil}},
		{"space in name", "HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n", false, no},
		{"space before colon", "HTTP/1.1 200 OK\r\nX-Foo : x\r\nContent-Length: 0\r\n\r\n", false, no},
		{"separator in name", "HTTP/1.1 200 OK\r\nX-F(o): x\r\nContent-Length: 0\r\n\r\n", false, no},
		{"empty name", "HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 0\r\n\r\n", false, no},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-Foo: a\r\n b\r\nContent-Length: 0\r\n\r\n", false, no},
		{"NUL", "HTTP/1.1 200 OK\r\nX-Foo: a\x00b\r\nContent-Length: 0\r\n\r\n", false, no},
		{"non-ASCII value", "HTTP/1.1 200 OK\r\nX-Foo: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n", false,
			want{true, 200, 0, false, false, []string{"X-Foo: caf\xc3\xa9"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a fastAnswer
			ok := parseAnswerHead([]byte(tc.head), tc.isHEAD, &a)
			if ok != tc.want.ok {
				t.Fatalf("parseAnswerHead(%q, %v) = %v, want %v", tc.head, tc.isHEAD, ok, tc.want.ok)
			}
			if !ok {
				return
			}
			got := want{true, a.status, a.length, a.close, a.date, headerStrings(a.lines)}
			if got.status != tc.want.status || got.length != tc.want.length || got.close != tc.want.close ||
				got.date != tc.want.date || !slices.Equal(got.lines, tc.want.lines) {
				t.Errorf("parseAnswerHead(%q, %v):\n got %+v\nwant %+v", tc.head, tc.isHEAD, got, tc.want)
			}
			checkAnswerHead(t, []byte(tc.head), []byte(tc.head), tc.isHEAD, &a)
		})
	}
}
