package network

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Chains the node agent owns; INPUT and FORWARD jump to them first.
const (
	chainInput   = "AGENTHOST-INPUT"
	chainForward = "AGENTHOST-FORWARD"
)

// linkLocal holds cloud metadata services (169.254.169.254) and the like.
var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

// firewall installs one agent's isolation rules, tagged with its id so that
// they are removed with its network and never outlive it.
type firewall struct {
	ipt       *iptables.IPTables
	subnet    netip.Prefix
	blocked   []netip.Prefix
	hostPorts []uint16
}

func newFirewall(subnet netip.Prefix, blocked []netip.Prefix, hostPorts []uint16) (*firewall, error) {
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	fw := &firewall{ipt: ipt, subnet: subnet, blocked: blocked, hostPorts: hostPorts}
	for _, c := range []struct{ chain, parent string }{{chainInput, "INPUT"}, {chainForward, "FORWARD"}} {
		exists, err := ipt.ChainExists("filter", c.chain)
		if err != nil {
			return nil, fmt.Errorf("iptables: %w", err)
		}
		if !exists {
			if err := ipt.NewChain("filter", c.chain); err != nil {
				// Another node agent process (tests run several) may have
				// created it meanwhile.
				if again, _ := ipt.ChainExists("filter", c.chain); !again {
					return nil, fmt.Errorf("create chain %s: %w", c.chain, err)
				}
			}
		}
		jump := []string{"-m", "comment", "--comment", "agenthost isolation", "-j", c.chain}
		if ok, err := ipt.Exists("filter", c.parent, jump...); err != nil {
			return nil, err
		} else if !ok {
			if err := ipt.Insert("filter", c.parent, 1, jump...); err != nil {
				return nil, fmt.Errorf("jump from %s: %w", c.parent, err)
			}
		}
	}
	return fw, nil
}

func tag(agentID string) string { return "agenthost:" + agentID }

// rules are the agent's isolation rules, in order, per chain.
func (fw *firewall) rules(agentID string, ip netip.Addr) map[string][][]string {
	src := []string{"-s", ip.String() + "/32", "-m", "comment", "--comment", tag(agentID)}
	rule := func(rest ...string) []string { return append(append([]string{}, src...), rest...) }
	established := rule("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN")
	forward := [][]string{
		established, // replies to connections made to the agent
		rule("-d", fw.subnet.String(), "-j", "DROP"),
		rule("-d", linkLocal.String(), "-j", "DROP"),
	}
	for _, p := range fw.blocked {
		forward = append(forward, rule("-d", p.String(), "-j", "DROP"))
	}
	// Nothing on the host itself — not the node agent, not a control
	// plane, not any other local service — but the services meant for
	// agents (the offline model).
	input := [][]string{established}
	for _, port := range fw.hostPorts {
		input = append(input, rule("-p", "tcp", "--dport", fmt.Sprint(port), "-j", "RETURN"))
	}
	input = append(input, rule("-j", "DROP"))
	return map[string][][]string{
		chainInput:   input,
		chainForward: forward,
	}
}

// isolate replaces the agent's rules with fresh ones for ip. The old rules'
// removal and the new rules go in one iptables-restore transaction: two
// iptables runs per agent start instead of one per rule (each is a process
// and a ruleset round trip, about 7 ms here).
func (fw *firewall) isolate(agentID string, ip netip.Addr) error {
	old, err := fw.tagged(agentID)
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, r := range old {
		b.WriteString("-D " + r + "\n")
	}
	rules := fw.rules(agentID, ip)
	for _, chain := range []string{chainInput, chainForward} {
		for _, r := range rules[chain] {
			b.WriteString("-A " + chain + " " + strings.Join(r, " ") + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	if err := restore(b.String()); err != nil {
		return fmt.Errorf("isolate agent %s: %w", agentID, err)
	}
	return nil
}

// release deletes every rule tagged with the agent's id.
func (fw *firewall) release(agentID string) error {
	old, err := fw.tagged(agentID)
	if err != nil || len(old) == 0 {
		return err
	}
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, r := range old {
		b.WriteString("-D " + r + "\n")
	}
	b.WriteString("COMMIT\n")
	if err := restore(b.String()); err != nil {
		return fmt.Errorf("remove rules of agent %s: %w", agentID, err)
	}
	return nil
}

// tagged lists the agent's rules in our chains as iptables-save prints them,
// without the leading "-A": "CHAIN match... -j TARGET".
func (fw *firewall) tagged(agentID string) ([]string, error) {
	out, err := exec.Command("iptables-save", "-t", "filter").Output()
	if err != nil {
		return nil, fmt.Errorf("iptables-save: %w", err)
	}
	marker := tag(agentID)
	var rules []string
	for _, line := range strings.Split(string(out), "\n") {
		rest, ok := strings.CutPrefix(line, "-A ")
		if !ok {
			continue
		}
		chain, _, _ := strings.Cut(rest, " ")
		if chain != chainInput && chain != chainForward {
			continue
		}
		for _, f := range strings.Fields(rest) {
			if strings.Trim(f, `"`) == marker {
				rules = append(rules, rest)
				break
			}
		}
	}
	return rules, nil
}

// restore applies an iptables-restore transaction without flushing anything
// else, waiting for the xtables lock like every other iptables user.
func restore(input string) error {
	cmd := exec.Command("iptables-restore", "--noflush", "--wait", "5")
	cmd.Stdin = strings.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
