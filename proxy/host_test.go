package proxy

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const (
	testID  = "agabcdefghijklmnopqrst" // "ag" and 20 characters of [a-z2-7]
	testID2 = "ag234567abcdefghijklmn"
)

func mustDomain(t testing.TB, s string) Domain {
	t.Helper()
	d, err := NewDomain(s)
	if err != nil {
		t.Fatalf("NewDomain(%q): %v", s, err)
	}
	return d
}

func checkMatch(t *testing.T, d Domain, host string, want Target) {
	t.Helper()
	if got := d.Match(host); got != want {
		t.Errorf("Domain(%q).Match(%q) = %+v, want %+v", d, host, got, want)
	}
}

func TestMatch(t *testing.T) {
	var (
		none = Target{}
		api  = Target{Kind: RouteAPI}
	)
	port := func(p int) Target { return Target{Kind: RouteAgentPort, Port: p} }
	id := func(s string) Target { return Target{Kind: RouteAgentID, AgentID: s} }

	d := mustDomain(t, "example.com")
	for _, tc := range []struct {
		host string
		want Target
	}{
		// Agents by port.
		{"a10042.example.com", port(10042)},
		{"a1.example.com", port(1)},
		{"a9.example.com", port(9)},
		{"a65535.example.com", port(65535)},
		{"A10042.EXAMPLE.COM", port(10042)},
		{"a10042.Example.Com", port(10042)},
		{"a10042.example.com.", port(10042)},
		{"a10042.example.com:443", port(10042)},
		{"a10042.example.com.:8080", port(10042)},
		{"a10042.example.com:1", port(10042)},
		{"a10042.example.com:99999", port(10042)},
		{"a0.example.com", none},      // port 0
		{"a00.example.com", none},     // leading zero
		{"a010.example.com", none},    // leading zero
		{"a010042.example.com", none}, // leading zero
		{"a65536.example.com", none},
		{"a99999.example.com", none},
		{"a100000.example.com", none},
		{"a4294977338.example.com", none}, // 10042 + 2^32
		{"a.example.com", none},
		{"a-1.example.com", none},
		{"a+1.example.com", none},
		{"a1a.example.com", none},
		{"a 1.example.com", none},
		{"a１.example.com", none}, // fullwidth digit
		{"b10042.example.com", none},
		{"aa10042.example.com", none},
		{"10042.example.com", none},
		{"a0x10.example.com", none},

		// Agents by ID.
		{testID + ".example.com", id(testID)},
		{testID2 + ".example.com", id(testID2)},
		{strings.ToUpper(testID) + ".EXAMPLE.COM", id(testID)},
		{"Ag" + testID[2:] + ".example.com", id(testID)},
		{testID + ".example.com.", id(testID)},
		{testID + ".example.com:8443", id(testID)},
		{"ag" + strings.Repeat("a", 20) + ".example.com", id("ag" + strings.Repeat("a", 20))},
		{"ag" + strings.Repeat("a", 19) + ".example.com", none},  // too short
		{"ag" + strings.Repeat("a", 21) + ".example.com", none},  // too long
		{"ag" + strings.Repeat("a", 19) + "1.example.com", none}, // not base32
		{"ag" + strings.Repeat("a", 19) + "8.example.com", none},
		{"ag" + strings.Repeat("a", 19) + "0.example.com", none},
		{"ag" + strings.Repeat("a", 19) + "9.example.com", none},
		{"ag" + strings.Repeat("a", 19) + "-.example.com", none},
		{"ag" + strings.Repeat("a", 19) + "_.example.com", none},
		{"ag" + strings.Repeat("a", 19) + "é.example.com", none},
		{"ab" + testID[2:] + ".example.com", none}, // wrong prefix
		{"sc" + testID[2:] + ".example.com", none},
		{"a" + testID[2:] + "z.example.com", none},

		// The API.
		{"example.com", api},
		{"EXAMPLE.COM", api},
		{"example.com.", api},
		{"example.com:443", api},
		{"example.com.:443", api},
		{"api.example.com", api},
		{"API.EXAMPLE.COM.", api},
		{"Api.Example.Com:8080", api},
		{"api.example.com.:8080", api},
		{"apis.example.com", none},
		{"ap.example.com", none},
		{"x.api.example.com", none},

		// Other names under the domain, and names of other domains.
		{"www.example.com", none},
		{"foo.example.com", none},
		{"com", none},
		{"example", none},
		{"localhost", none},
		{"x.a10042.example.com", none},
		{"a1.a10042.example.com", none},
		{testID + ".a10042.example.com", none},
		{"a10042." + testID + ".example.com", none},
		{"x." + testID + ".example.com", none},
		{"a10042.example.com.evil.com", none},
		{"a10042.example.com.evil.com:443", none},
		{"a10042.notexample.com", none},
		{"a10042example.com", none},
		{"a10042.example.co", none},
		{"a10042.example.comm", none},
		{"a10042.xexample.com", none},
		{"a10042-example.com", none},
		{testID + ".example.com.evil.com", none},
		{"api.example.com.evil.com", none},
		{"example.com.evil.com", none},
		{"evil.com", none},
		{"a10042.ex\u212Ample.com", none}, // Kelvin sign, which EqualFold takes for a 'k'

		// Malformed hosts.
		{"", none},
		{".", none},
		{":443", none},
		{".example.com", none},
		{"..example.com", none},
		{"a10042..example.com", none},
		{"a..example.com", none},
		{"a10042.example..com", none},
		{"a10042.example.com..", none},
		{"example.com..", none},
		{".a10042.example.com", none},
		{"user@a10042.example.com", none},
		{"user:pw@a10042.example.com", none},
		{"a10042.example.com@evil.com", none},
		{"a10042.example.com:443@evil.com", none},
		{" a10042.example.com", none},
		{"a10042.example.com ", none},
		{"a10042.example.com\t", none},
		{"a10042 .example.com", none},
		{"a10042.example.com\n", none},
		{"a10042.example.com\r\nX-Evil: 1", none},
		{"a10042.example.com\x00", none},
		{"a10042.example.com\x7f", none},
		{"a10042\x00.example.com", none},
		{"a10042.éxample.com", none},
		{"a10042.example.com\xff", none},
		{"a%31.example.com", none},
		{"a10042.example%2ecom", none},
		{"a10042.example.com%00", none},
		{"a10042.example.com/", none},
		{"a10042.example.com/path", none},
		{"a10042.example.com?", none},
		{"a10042.example.com#", none},
		{"a10042_x.example.com", none},
		{"*.example.com", none},
		{"-.example.com", none},
		{"a10042.-example.com", none},
		{strings.Repeat("a", 64) + ".example.com", none},
		{strings.Repeat("a.", 122) + "example.com", none}, // 255 characters
		{"a10042." + strings.Repeat("a.", 124) + "example.com", none},

		// Ports.
		{"a10042.example.com:", none},
		{"a10042.example.com:0x1", none},
		{"a10042.example.com:123456", none},
		{"a10042.example.com:-1", none},
		{"a10042.example.com:+1", none},
		{"a10042.example.com: 1", none},
		{"a10042.example.com:1 ", none},
		{"a10042.example.com:http", none},
		{"a10042.example.com:443:443", none},
		{"a10042.example.com::443", none},
		{"a10042:443.example.com", none},
		{"a10042.example.com:１", none},

		// IP literals.
		{"[::1]", none},
		{"[::1]:80", none},
		{"::1", none},
		{"127.0.0.1", none},
		{"127.0.0.1:80", none},
	} {
		checkMatch(t, d, tc.host, tc.want)
	}
}

// TestMatchLocalhost covers the development domain, a single label.
func TestMatchLocalhost(t *testing.T) {
	d := mustDomain(t, "LocalHost.")
	for _, tc := range []struct {
		host string
		want Target
	}{
		{"localhost", Target{Kind: RouteAPI}},
		{"localhost:8080", Target{Kind: RouteAPI}},
		{"api.localhost:8080", Target{Kind: RouteAPI}},
		{"a10042.localhost:8080", Target{Kind: RouteAgentPort, Port: 10042}},
		{"A10042.LOCALHOST.", Target{Kind: RouteAgentPort, Port: 10042}},
		{testID + ".localhost", Target{Kind: RouteAgentID, AgentID: testID}},
		{"a10042.example.com", Target{}},
		{"a10042.localhost.localdomain", Target{}},
		{"a10042localhost", Target{}},
		{"x.a10042.localhost", Target{}},
		{"127.0.0.1:8080", Target{}},
	} {
		checkMatch(t, d, tc.host, tc.want)
	}
}

// TestMatchPortDomain covers a domain whose first label looks like a port
// address: its apex is the API, not an agent.
func TestMatchPortDomain(t *testing.T) {
	d := mustDomain(t, "a1.example.com")
	checkMatch(t, d, "a1.example.com", Target{Kind: RouteAPI})
	checkMatch(t, d, "a2.a1.example.com", Target{Kind: RouteAgentPort, Port: 2})
	checkMatch(t, d, "a2.example.com", Target{})
}

func TestMatchZeroDomain(t *testing.T) {
	for _, host := range []string{"", ".", "a1", "a1.", "api", "localhost", testID} {
		checkMatch(t, Domain{}, host, Target{})
	}
}

func TestMatchAllPorts(t *testing.T) {
	d := mustDomain(t, "example.com")
	for p := 1; p <= 65535; p++ {
		host := "a" + strconv.Itoa(p) + ".example.com"
		if got := d.Match(host); got != (Target{Kind: RouteAgentPort, Port: p}) {
			t.Fatalf("Match(%q) = %+v", host, got)
		}
	}
}

func TestNewDomain(t *testing.T) {
	label63 := strings.Repeat("b", 63)
	name253 := strings.Repeat("a.", 121) + "example.com" // 253 characters
	for _, tc := range []struct {
		in, want string // want "" for an error
	}{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com.", "example.com"},
		{"EXAMPLE.COM.", "example.com"},
		{"localhost", "localhost"},
		{"localhost.", "localhost"},
		{"com", "com"},
		{"a-b.example.com", "a-b.example.com"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"123.example.com", "123.example.com"},
		{"a1.example.com", "a1.example.com"},
		{label63 + ".com", label63 + ".com"},
		{name253, name253},
		{name253 + ".", name253},

		{"", ""},
		{".", ""},
		{"..", ""},
		{"example.com..", ""},
		{".example.com", ""},
		{"example..com", ""},
		{"-example.com", ""},
		{"example-.com", ""},
		{"example.-com", ""},
		{"example.com-", ""},
		{"exa mple.com", ""},
		{" example.com", ""},
		{"example.com ", ""},
		{"ex_ample.com", ""},
		{"ex%61mple.com", ""},
		{"user@example.com", ""},
		{"example.com:443", ""},
		{"[::1]", ""},
		{"*.example.com", ""},
		{"éxample.com", ""},
		{"\u212Aexample.com", ""}, // Kelvin sign, which strings.ToLower makes a 'k'
		{"example.com\x00", ""},
		{label63 + "b.com", ""},
		{"a" + name253, ""},
		{"a" + name253 + ".", ""},
	} {
		d, err := NewDomain(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("NewDomain(%q) = %q, want an error", tc.in, d)
		case tc.want == "" && !errors.Is(err, ErrInvalidDomain):
			t.Errorf("NewDomain(%q) error %v, want ErrInvalidDomain", tc.in, err)
		case tc.want != "" && err != nil:
			t.Errorf("NewDomain(%q): %v", tc.in, err)
		case d.String() != tc.want:
			t.Errorf("NewDomain(%q) = %q, want %q", tc.in, d, tc.want)
		}
	}
}

func TestRouteKindString(t *testing.T) {
	for k, want := range map[RouteKind]string{
		RouteNone:      "none",
		RouteAPI:       "api",
		RouteAgentPort: "agent_port",
		RouteAgentID:   "agent_id",
		RouteKind(9):   "RouteKind(9)",
	} {
		if got := k.String(); got != want {
			t.Errorf("RouteKind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

// matchBenchHosts are hosts the proxy sees on every request; Match must not
// allocate for any of them.
var matchBenchHosts = []struct{ name, host string }{
	{"port", "a10042.example.com:443"},
	{"id", testID + ".example.com"},
	{"api", "api.example.com:443"},
	{"none", "www.example.com"},
}

func TestMatchAllocs(t *testing.T) {
	d := mustDomain(t, "example.com")
	for _, h := range matchBenchHosts {
		if n := testing.AllocsPerRun(100, func() { d.Match(h.host) }); n != 0 {
			t.Errorf("Match(%q) makes %v allocations, want 0", h.host, n)
		}
	}
}

var matchSink Target

func BenchmarkMatch(b *testing.B) {
	d := mustDomain(b, "example.com")
	for _, h := range matchBenchHosts {
		b.Run(h.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				matchSink = d.Match(h.host)
			}
		})
	}
}

var agentIDPattern = regexp.MustCompile(`^ag[a-z2-7]{20}$`)

// canonicalHost is the name Match would be given for t if nobody varied
// its case, dot or port.
func canonicalHost(t Target, d Domain) string {
	switch t.Kind {
	case RouteAgentPort:
		return "a" + strconv.Itoa(t.Port) + "." + d.String()
	case RouteAgentID:
		return t.AgentID + "." + d.String()
	}
	return d.String()
}

func FuzzMatch(f *testing.F) {
	for _, s := range []string{
		"a10042.example.com", "A10042.EXAMPLE.COM.", "a10042.example.com:443",
		"a1.example.com.:8080", "a65535.localhost", "a65536.example.com", "a010.example.com",
		"a0.example.com", testID + ".example.com", strings.ToUpper(testID) + ".localhost:80",
		"ag" + strings.Repeat("a", 19) + "1.example.com", "example.com", "api.example.com",
		"API.EXAMPLE.COM.", "localhost:3000", "api.localhost", "a2.a1.example.com",
		"x.a10042.example.com", "a10042.example.com.evil.com", "a10042.notexample.com",
		"a10042example.com", "user@a1.example.com", "a1.example.com:0x1", "a1.example.com:",
		"a1.example.com:123456", "a..example.com", "[::1]:80", "a%31.example.com",
		"a1.ex\u212Ample.com", "a1.example.com\x00", "",
	} {
		f.Add(s)
	}
	domains := []Domain{
		mustDomain(f, "example.com"),
		mustDomain(f, "localhost"),
		mustDomain(f, "a1.example.com"),
	}
	f.Fuzz(func(t *testing.T, host string) {
		for _, d := range domains {
			got := d.Match(host)
			if !strings.Contains(host, ":") {
				if withPort := d.Match(host + ":443"); withPort != got {
					t.Errorf("Domain(%q): Match(%q) = %+v but with a port %+v", d, host, got, withPort)
				}
			}
			switch got.Kind {
			case RouteNone:
				if got != (Target{}) {
					t.Fatalf("Domain(%q).Match(%q) = %+v, not the zero Target", d, host, got)
				}
				continue
			case RouteAPI:
				if got.Port != 0 || got.AgentID != "" {
					t.Fatalf("Domain(%q).Match(%q) = %+v", d, host, got)
				}
			case RouteAgentPort:
				if got.Port < 1 || got.Port > 65535 || got.AgentID != "" {
					t.Fatalf("Domain(%q).Match(%q) = %+v", d, host, got)
				}
			case RouteAgentID:
				if !agentIDPattern.MatchString(got.AgentID) || got.Port != 0 {
					t.Fatalf("Domain(%q).Match(%q) = %+v", d, host, got)
				}
			default:
				t.Fatalf("Domain(%q).Match(%q) = %+v, an unknown kind", d, host, got)
			}

			if upper := d.Match(strings.ToUpper(host)); upper != got {
				t.Errorf("Domain(%q): Match(%q) = %+v but upper-cased %+v", d, host, got, upper)
			}
			canon := canonicalHost(got, d)
			if again := d.Match(canon); again != got {
				t.Errorf("Domain(%q): Match(%q) = %+v but Match(%q) = %+v", d, host, got, canon, again)
			}

			// A host that matches is its canonical name up to case, one
			// trailing dot and a port of 1–5 digits: nothing else gets in.
			name := host
			if i := strings.LastIndexByte(name, ':'); i >= 0 {
				if !isDigits(name[i+1:]) || len(name)-i-1 > 5 {
					t.Errorf("Domain(%q): Match(%q) = %+v despite its port", d, host, got)
				}
				name = name[:i]
			}
			name = strings.ToLower(strings.TrimSuffix(name, "."))
			if name != canon && !(got.Kind == RouteAPI && name == "api."+d.String()) {
				t.Errorf("Domain(%q): Match(%q) = %+v but its name %q is not %q", d, host, got, name, canon)
			}
		}
	})
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
