package proxy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalidDomain is returned by NewDomain for a base domain that is not a
// valid DNS name.
var ErrInvalidDomain = errors.New("invalid domain")

// RouteKind says what a request's host names.
type RouteKind int

const (
	RouteNone      RouteKind = iota // not a host this proxy serves
	RouteAPI                        // the apex or api.<domain>
	RouteAgentPort                  // a<port>.<domain>
	RouteAgentID                    // <agentId>.<domain>
)

// String returns the kind's metrics label.
func (k RouteKind) String() string {
	switch k {
	case RouteNone:
		return "none"
	case RouteAPI:
		return "api"
	case RouteAgentPort:
		return "agent_port"
	case RouteAgentID:
		return "agent_id"
	}
	return "RouteKind(" + strconv.Itoa(int(k)) + ")"
}

// Target is what a host names: for RouteAgentPort Port is set, for
// RouteAgentID AgentID. The zero Target is RouteNone.
type Target struct {
	Kind    RouteKind
	Port    int    // 1–65535, for RouteAgentPort
	AgentID string // lower case, for RouteAgentID
}

const (
	maxNameLen  = 253 // of a DNS name without its trailing dot
	maxLabelLen = 63
	agentIDLen  = 22 // "ag" and 20 characters of lowercase base32, as api/ids.go makes them
)

// Domain is a normalised base domain: lower case, without a trailing dot. The
// zero Domain matches no host.
type Domain struct {
	name string
}

// NewDomain lower-cases s, strips one trailing dot, and checks that the rest
// is a DNS name of at most 253 characters whose labels are 1–63 letters,
// digits and hyphens, not starting or ending with a hyphen ("localhost" is
// one).
func NewDomain(s string) (Domain, error) {
	name := strings.TrimSuffix(s, ".")
	if why := nameProblem(name); why != "" {
		return Domain{}, fmt.Errorf("%w %q: %s", ErrInvalidDomain, s, why)
	}
	return Domain{name: lowerASCII(name)}, nil
}

// String returns the normalised domain.
func (d Domain) String() string { return d.name }

// Match parses a Host header value (or URL authority) against the domain:
// a<port>.<domain> names an agent by port, <agentId>.<domain> an agent by
// ID, and the apex and api.<domain> the API. It ignores case, one trailing
// dot and a port suffix of 1–5 digits; anything else that is not exactly one
// of those names, such as a second label in front of the domain, userinfo,
// an IP literal or a percent-escape, is RouteNone.
//
// Match runs on every proxied request, so for a lower-case host it does not
// allocate.
func (d Domain) Match(host string) Target {
	name, ok := hostName(host)
	if !ok || d.name == "" {
		return Target{}
	}
	if equalFoldASCII(name, d.name) {
		return Target{Kind: RouteAPI}
	}
	// name must be <label>.<domain>; hostName has already rejected empty
	// labels, and the label forms below admit no dot.
	n := len(name) - len(d.name) - 1
	if n < 1 || name[n] != '.' || !equalFoldASCII(name[n+1:], d.name) {
		return Target{}
	}
	label := name[:n]
	// The port form is tried first, although no agent ID can look like one
	// (an ID's second character is 'g').
	if port, ok := parsePortLabel(label); ok {
		return Target{Kind: RouteAgentPort, Port: port}
	}
	if isAgentID(label) {
		return Target{Kind: RouteAgentID, AgentID: lowerASCII(label)}
	}
	if equalFoldASCII(label, "api") {
		return Target{Kind: RouteAPI}
	}
	return Target{}
}

// hostName returns host without its port suffix and one trailing dot, and
// whether what remains is a valid DNS name and the port, if any, 1–5 digits.
func hostName(host string) (string, bool) {
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		if !isPort(host[i+1:]) {
			return "", false
		}
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	return host, nameProblem(host) == ""
}

// nameProblem returns why s is not a DNS name of letters, digits and
// hyphens, or "" if it is one. The reasons are constants, so checking a host
// allocates nothing.
func nameProblem(s string) string {
	if s == "" {
		return "empty"
	}
	if len(s) > maxNameLen {
		return "longer than 253 characters"
	}
	start := 0 // of the current label
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			if c := s[i]; !(isLetter(c) || isDigit(c) || c == '-') {
				return "a character other than a letter, digit, hyphen or dot"
			}
			continue
		}
		label := s[start:i]
		switch {
		case label == "":
			return "an empty label"
		case len(label) > maxLabelLen:
			return "a label longer than 63 characters"
		case label[0] == '-' || label[len(label)-1] == '-':
			return "a label starting or ending with a hyphen"
		}
		start = i + 1
	}
	return ""
}

// isPort reports whether s is the port of a Host header: 1–5 digits.
func isPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// parsePortLabel parses a<port>: 'a' or 'A' and a port 1–65535 in decimal
// without leading zeros, so that every port has exactly one host name.
func parsePortLabel(label string) (int, bool) {
	if len(label) < 2 || len(label) > 6 || label[0]|0x20 != 'a' || label[1] == '0' {
		return 0, false
	}
	port := 0
	for i := 1; i < len(label); i++ {
		c := label[i]
		if !isDigit(c) {
			return 0, false
		}
		port = port*10 + int(c-'0')
	}
	if port > 65535 {
		return 0, false
	}
	return port, true
}

// isAgentID reports whether label is an agent ID, ^ag[a-z2-7]{20}$, in any
// case.
func isAgentID(label string) bool {
	if len(label) != agentIDLen || !equalFoldASCII(label[:2], "ag") {
		return false
	}
	for i := 2; i < len(label); i++ {
		if c := label[i]; !(isLetter(c) || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func lowerByte(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// equalFoldASCII is strings.EqualFold for ASCII only: unlike EqualFold it
// does not take the Kelvin sign for a 'k', so no non-ASCII host can match.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lowerByte(a[i]) != lowerByte(b[i]) {
			return false
		}
	}
	return true
}

// lowerASCII lower-cases the ASCII letters of s, returning s itself, without
// allocating, when it has no upper-case letter.
func lowerASCII(s string) string {
	i := 0
	for i < len(s) && !(s[i] >= 'A' && s[i] <= 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		b[i] = lowerByte(b[i])
	}
	return string(b)
}
