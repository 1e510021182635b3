package network

import (
	"fmt"
	"net/netip"
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

func (fw *firewall) isolate(agentID string, ip netip.Addr) error {
	if err := fw.release(agentID); err != nil {
		return err
	}
	for chain, rules := range fw.rules(agentID, ip) {
		for _, r := range rules {
			if err := fw.ipt.Append("filter", chain, r...); err != nil {
				return fmt.Errorf("isolate agent %s: %w", agentID, err)
			}
		}
	}
	return nil
}

// release deletes every rule tagged with the agent's id.
func (fw *firewall) release(agentID string) error {
	marker := tag(agentID)
	for _, chain := range []string{chainInput, chainForward} {
		rules, err := fw.ipt.List("filter", chain)
		if err != nil {
			return fmt.Errorf("list %s: %w", chain, err)
		}
		for _, r := range rules {
			fields := strings.Fields(r)
			if len(fields) < 2 || fields[0] != "-A" {
				continue
			}
			spec := fields[2:]
			found := false
			for i, f := range spec {
				spec[i] = strings.Trim(f, `"`)
				if spec[i] == marker {
					found = true
				}
			}
			if !found {
				continue
			}
			if err := fw.ipt.Delete("filter", chain, spec...); err != nil {
				return fmt.Errorf("remove rule of agent %s: %w", agentID, err)
			}
		}
	}
	return nil
}
