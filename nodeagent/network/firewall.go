package network

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Chains the node agent owns; the built-in chains jump to them first.
const (
	chainInput   = "AGENTHOST-INPUT"   // filter, from INPUT
	chainForward = "AGENTHOST-FORWARD" // filter, from FORWARD
	// chainHostPorts holds each agent's host-port DNAT, jumped to from
	// PREROUTING (connections from elsewhere) and OUTPUT (from this host)
	// for destinations that are this host's own addresses, as CNI's portmap
	// does.
	chainHostPorts = "AGENTHOST-HOSTPORTS" // nat
	// chainMasquerade holds the node's source NAT, the same two rules for
	// every agent of a subnet: outbound masquerade, and that of host-port
	// connections made from a loopback address.
	chainMasquerade = "AGENTHOST-MASQUERADE" // nat, from POSTROUTING
)

// linkLocal holds cloud metadata services (169.254.169.254) and the like.
var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

// loopback is where the host's own connections to 127.0.0.1:<host port>
// come from.
var loopback = netip.MustParsePrefix("127.0.0.0/8")

// firewall installs one agent's rules, tagged with its id so that they are
// removed with its network and never outlive it: isolation in the filter
// table, its host port's forwarding in the nat table.
type firewall struct {
	subnet    netip.Prefix
	blocked   []netip.Prefix
	hostPorts []uint16
}

// jump is a rule in a built-in chain that sends packets to one of ours.
type jump struct {
	table, parent, chain, comment string
	match                         []string
}

var jumps = []jump{
	{"filter", "INPUT", chainInput, "agenthost isolation", nil},
	{"filter", "FORWARD", chainForward, "agenthost isolation", nil},
	{"nat", "PREROUTING", chainHostPorts, "agenthost host ports", []string{"-m", "addrtype", "--dst-type", "LOCAL"}},
	{"nat", "OUTPUT", chainHostPorts, "agenthost host ports", []string{"-m", "addrtype", "--dst-type", "LOCAL"}},
	{"nat", "POSTROUTING", chainMasquerade, "agenthost masquerade", nil},
}

// newFirewall creates our chains and the jumps to them, and the subnet's
// masquerade rules. Each is checked before it is added: the node agent
// restarts onto what its predecessor installed, and tests run several node
// agents (with subnets of their own) on one host.
func newFirewall(subnet netip.Prefix, blocked []netip.Prefix, hostPorts []uint16) (*firewall, error) {
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	for _, j := range jumps {
		exists, err := ipt.ChainExists(j.table, j.chain)
		if err != nil {
			return nil, fmt.Errorf("iptables: %w", err)
		}
		if !exists {
			if err := ipt.NewChain(j.table, j.chain); err != nil {
				// Another node agent process may have created it meanwhile.
				if again, _ := ipt.ChainExists(j.table, j.chain); !again {
					return nil, fmt.Errorf("create chain %s: %w", j.chain, err)
				}
			}
		}
		// First in its parent: ahead of anything else's rules, such as a
		// leftover portmap DNAT for the same port.
		rule := append(append([]string{}, j.match...), "-m", "comment", "--comment", j.comment, "-j", j.chain)
		if ok, err := ipt.Exists(j.table, j.parent, rule...); err != nil {
			return nil, err
		} else if !ok {
			if err := ipt.Insert(j.table, j.parent, 1, rule...); err != nil {
				return nil, fmt.Errorf("jump from %s: %w", j.parent, err)
			}
		}
	}
	s := subnet.Masked().String()
	masquerade := [][]string{
		// Agents' connections to the world leave with the node's address,
		// one rule for the subnet instead of a chain per container (ptp's
		// ipMasq).
		{"-s", s, "!", "-d", s, "-m", "comment", "--comment", "agenthost outbound " + s, "-j", "MASQUERADE"},
		// The host's connections to 127.0.0.1:<host port>, DNATed in OUTPUT,
		// would reach the agent from 127.0.0.1, which it would answer on its
		// own loopback; they take the node's address on the agent's link
		// instead. (The agent's host-side veth has route_localnet set, or the
		// kernel would not route a 127/8 source out of it at all.)
		{"-s", loopback.String(), "-d", s, "-m", "comment", "--comment", "agenthost localhost to " + s, "-j", "MASQUERADE"},
	}
	for _, rule := range masquerade {
		if err := ipt.AppendUnique("nat", chainMasquerade, rule...); err != nil {
			return nil, fmt.Errorf("masquerade %s: %w", s, err)
		}
	}
	return &firewall{subnet: subnet, blocked: blocked, hostPorts: hostPorts}, nil
}

func tag(agentID string) string { return "agenthost:" + agentID }

// tables are iptables rules by table, each "CHAIN match... -j TARGET", as
// iptables-save prints them without the leading "-A".
type tables map[string][]string

// rules are the agent's rules, in order: its isolation, and hostPort
// forwarded to runtimePort at ip (none when hostPort is 0).
func (fw *firewall) rules(agentID string, ip netip.Addr, hostPort, runtimePort int) tables {
	src := "-s " + ip.String() + "/32 -m comment --comment " + tag(agentID)
	rule := func(chain, rest string) string { return chain + " " + src + " " + rest }
	established := "-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"
	// Replies to connections made to the agent; then nothing to other
	// agents, metadata services or the blocked prefixes.
	filter := []string{
		rule(chainForward, established),
		rule(chainForward, "-d "+fw.subnet.String()+" -j DROP"),
		rule(chainForward, "-d "+linkLocal.String()+" -j DROP"),
	}
	for _, p := range fw.blocked {
		filter = append(filter, rule(chainForward, "-d "+p.String()+" -j DROP"))
	}
	// Nothing on the host itself — not the node agent, not a control
	// plane, not any other local service — but the services meant for
	// agents (the offline model).
	filter = append(filter, rule(chainInput, established))
	for _, port := range fw.hostPorts {
		filter = append(filter, rule(chainInput, fmt.Sprintf("-p tcp --dport %d -j RETURN", port)))
	}
	filter = append(filter, rule(chainInput, "-j DROP"))
	var nat []string
	if hostPort > 0 {
		nat = append(nat, fmt.Sprintf("%s -p tcp --dport %d -m comment --comment %s -j DNAT --to-destination %s",
			chainHostPorts, hostPort, tag(agentID), netip.AddrPortFrom(ip, uint16(runtimePort))))
	}
	return tables{"filter": filter, "nat": nat}
}

// install replaces the agent's rules with fresh ones. The old rules'
// removal and the new rules, in both tables, go in one iptables-restore
// transaction: two iptables runs per agent start instead of one per rule
// (each is a process and a ruleset round trip, about 7 ms on a quiet
// machine, many times that on a busy one).
func (fw *firewall) install(agentID string, ip netip.Addr, hostPort, runtimePort int) error {
	old, err := fw.tagged(agentID)
	if err != nil {
		return err
	}
	if err := restore(old, fw.rules(agentID, ip, hostPort, runtimePort)); err != nil {
		return fmt.Errorf("install rules of agent %s: %w", agentID, err)
	}
	return nil
}

// release deletes every rule tagged with the agent's id.
func (fw *firewall) release(agentID string) error {
	old, err := fw.tagged(agentID)
	if err != nil || len(old["filter"])+len(old["nat"]) == 0 {
		return err
	}
	if err := restore(old, nil); err != nil {
		return fmt.Errorf("remove rules of agent %s: %w", agentID, err)
	}
	return nil
}

// tagged lists the agent's rules in our chains, from one iptables-save of
// every table.
func (fw *firewall) tagged(agentID string) (tables, error) {
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		return nil, fmt.Errorf("iptables-save: %w", err)
	}
	marker := tag(agentID)
	found := tables{}
	table := ""
	for _, line := range strings.Split(string(out), "\n") {
		if name, ok := strings.CutPrefix(line, "*"); ok {
			table = name
			continue
		}
		rest, ok := strings.CutPrefix(line, "-A ")
		if !ok {
			continue
		}
		chain, _, _ := strings.Cut(rest, " ")
		if chain != chainInput && chain != chainForward && chain != chainHostPorts {
			continue
		}
		for _, f := range strings.Fields(rest) {
			if strings.Trim(f, `"`) == marker {
				found[table] = append(found[table], rest)
				break
			}
		}
	}
	return found, nil
}

// restore deletes del and appends add in one iptables-restore run, without
// flushing anything else, waiting for the xtables lock like every other
// iptables user. The filter table goes first, so that an agent is isolated
// before its port is forwarded to it.
func restore(del, add tables) error {
	var b strings.Builder
	for _, table := range []string{"filter", "nat"} {
		if len(del[table])+len(add[table]) == 0 {
			continue
		}
		b.WriteString("*" + table + "\n")
		for _, r := range del[table] {
			b.WriteString("-D " + r + "\n")
		}
		for _, r := range add[table] {
			b.WriteString("-A " + r + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	cmd := exec.Command("iptables-restore", "--noflush", "--wait", "5")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
