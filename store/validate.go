package store

import (
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits shared with the REST layer, which reports them to users with 400s;
// the FSM enforces them again so that no path around the API can break them.
const (
	// MaxNameLength bounds agent, scope and org names, in characters.
	MaxNameLength = 100
	// MaxDescriptionLength bounds scope descriptions, in characters.
	MaxDescriptionLength = 1000
)

var secretKeyPattern = regexp.MustCompile(`^[A-Z0-9_]+$`)

// ValidName reports whether s is an acceptable agent, scope or org name:
// 1 to MaxNameLength characters of valid UTF-8.
func ValidName(s string) bool {
	n := utf8.RuneCountInString(s)
	return utf8.ValidString(s) && n >= 1 && n <= MaxNameLength
}

// ValidSecretKey reports whether k is an acceptable secret key:
// uppercase letters, digits and underscores.
func ValidSecretKey(k string) bool { return secretKeyPattern.MatchString(k) }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func requireID(kind, id string) error {
	if id == "" {
		return invalidf("%s id is required", kind)
	}
	return nil
}

func validateName(kind, name string) error {
	if !ValidName(name) {
		return invalidf("%s name must be 1-%d characters", kind, MaxNameLength)
	}
	return nil
}

// validateModel accepts "" (none) or "provider/model": printable, no
// spaces, at most 200 bytes.
func validateModel(m string) error {
	if m == "" {
		return nil
	}
	provider, model, ok := strings.Cut(m, "/")
	if !ok || provider == "" || model == "" || len(m) > 200 {
		return invalidf("model %q: want provider/model", m)
	}
	for _, r := range m {
		if r <= ' ' || r == 0x7f {
			return invalidf("model %q: no spaces or control characters", m)
		}
	}
	return nil
}

func validatePlan(p Plan) error {
	if p.MaxAgents < 0 || p.MaxRunning < 0 {
		return invalidf("plan caps must not be negative")
	}
	return nil
}

func validateDesired(d DesiredState) error {
	switch d {
	case DesiredRunning, DesiredStopped:
		return nil
	}
	return invalidf("desired state %q is not running or stopped", d)
}

func validateStatus(s AgentStatus) error {
	switch s {
	case StatusProvisioning, StatusRunning, StatusStopped, StatusError:
		return nil
	}
	return invalidf("agent status %q is unknown", s)
}

func validateNodeStatus(s NodeStatus) error {
	switch s {
	case NodeReady, NodeDraining, NodeDown:
		return nil
	}
	return invalidf("node status %q is unknown", s)
}

func validateDrain(d *NodeDrain) error {
	if d == nil {
		return nil
	}
	switch d.Agents {
	case DrainKeep, DrainStop, DrainMove:
	default:
		return invalidf("drain agents %q is unknown (keep, stop or move)", d.Agents)
	}
	return validateTime("drain deadline", d.Deadline)
}

func validateClusterConfig(c ClusterConfig) error {
	if c.PortRangeStart < 1 || c.PortRangeEnd > 65535 || c.PortRangeStart > c.PortRangeEnd {
		return invalidf("port range %d-%d must lie within 1-65535 and not be empty", c.PortRangeStart, c.PortRangeEnd)
	}
	switch c.SchedulerAlgorithm {
	case AlgorithmBinpack, AlgorithmSpread:
	default:
		return invalidf("scheduler algorithm %q is not %s or %s", c.SchedulerAlgorithm, AlgorithmBinpack, AlgorithmSpread)
	}
	switch c.ReschedulePolicy {
	case RescheduleReschedule, RescheduleFail:
	default:
		return invalidf("reschedule policy %q is not %s or %s", c.ReschedulePolicy, RescheduleReschedule, RescheduleFail)
	}
	switch c.Signup {
	case "", SignupOpen, SignupInvite, SignupClosed:
	default:
		return invalidf("sign-up mode %q is not %s, %s or %s", c.Signup, SignupOpen, SignupInvite, SignupClosed)
	}
	return nil
}

// ValidateEmail accepts a bare address (no display name, no angle
// brackets), lower-case, of at most 254 bytes: what sign-up stores.
func ValidateEmail(email string) error {
	if email == "" || len(email) > 254 || email != strings.ToLower(strings.TrimSpace(email)) {
		return invalidf("email %q must be a lower-case address of at most 254 characters", email)
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || addr.Name != "" {
		return invalidf("email %q is not a plain address", email)
	}
	return nil
}

// validateHexSHA256 checks a stored secret's digest: 64 lower-case hex digits.
func validateHexSHA256(what, h string) error {
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return invalidf("%s must be a hex SHA-256 digest", what)
	}
	return nil
}

// validateTime refuses times that cannot be written back as JSON (years
// outside 0-9999 in UTC): one such value would make every later snapshot fail.
func validateTime(what string, t time.Time) error {
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return invalidf("%s %s is out of range", what, t)
	}
	return nil
}
