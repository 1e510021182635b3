// Package gossip runs the hashicorp/memberlist membership that control nodes
// and node agents share, tuned to declare a dead member within about 1.5 s on
// a LAN. The leader uses it (besides heartbeats) to mark nodes down fast.
//
// The trade-off: every member probes one random peer every 200 ms and waits
// 150 ms for its ack; a peer that misses a probe, and then the indirect probes
// through 3 others, is suspected, and declared dead after
// SuspicionMult·log10(N+1)·ProbeInterval (at least 3 probe intervals). Shorter
// intervals find dead nodes sooner but cost more packets and turn a long GC
// pause or a congested link into a false "dead" more often; memberlist's
// Lifeguard extensions (awareness, refutation) soften that. A node wrongly
// declared dead refutes by gossiping itself alive, and its next heartbeat marks
// it ready again, so a false positive costs a re-placement, never a split;
// and the leader pings a member gossiped dead itself before acting on it
// (Answers), so a death gossiped by a member that was cut off costs nothing.
package gossip

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Member names carry the member's role.
const (
	ServerPrefix = "server/"
	NodePrefix   = "node/"
)

// Config configures one member.
type Config struct {
	// Name is unique in the pool: ServerPrefix or NodePrefix + id.
	Name string
	// BindAddr is host:port to listen on (TCP and UDP); port 0 picks one.
	BindAddr string
	// AdvertiseAddr is host:port others reach this member at (default: bound).
	AdvertiseAddr string
	// ProbeInterval, ProbeTimeout and SuspicionMult set failure detection.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	SuspicionMult int
	// OnDead is called when a member is declared dead or leaves.
	OnDead func(name string)
	// OnAlive is called when a member joins or comes back.
	OnAlive func(name string)
	Logger  *slog.Logger
}

// DefaultConfig returns the LAN tuning described in the package doc.
func DefaultConfig() Config {
	return Config{
		ProbeInterval: 200 * time.Millisecond,
		ProbeTimeout:  150 * time.Millisecond,
		SuspicionMult: 3,
		Logger:        slog.Default(),
	}
}

// Member is one running memberlist member. It keeps its own list of alive
// members, copied in memberlist's event callbacks (which run under
// memberlist's lock): the *Node values Memberlist.Members returns are
// updated in place by memberlist and cannot be read safely afterwards.
type Member struct {
	list *memberlist.Memberlist

	mu    sync.Mutex
	alive map[string]string // name → host:port
	// known is every member's last address, dead ones too (Answers).
	known map[string]string
}

// Start joins no one yet: call Join with known members' addresses.
func Start(cfg Config) (*Member, error) {
	if cfg.Name == "" || cfg.BindAddr == "" || cfg.Logger == nil {
		return nil, errors.New("gossip: name, bind address and logger are required")
	}
	host, portStr, err := net.SplitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip bind address: %w", err)
	}
	port, _ := strconv.Atoi(portStr)
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	if cfg.AdvertiseAddr != "" {
		ah, ap, err := net.SplitHostPort(cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("gossip advertise address: %w", err)
		}
		mc.AdvertiseAddr = ah
		mc.AdvertisePort, _ = strconv.Atoi(ap)
	}
	mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult = cfg.ProbeInterval, cfg.ProbeTimeout, cfg.SuspicionMult
	mc.GossipInterval = 100 * time.Millisecond
	mc.PushPullInterval = 15 * time.Second
	m := &Member{alive: map[string]string{}, known: map[string]string{}}
	mc.Events = &events{cfg: cfg, member: m}
	mc.Logger = log.New(&slogWriter{logger: cfg.Logger.With("component", "gossip")}, "", 0)
	list, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	m.list = list
	return m, nil
}

// Addr is where other members reach this one.
func (m *Member) Addr() string {
	n := m.list.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Join contacts known members; it succeeds when one answers.
func (m *Member) Join(addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	_, err := m.list.Join(addrs)
	return err
}

// Members lists the names of the members alive now, sorted.
func (m *Member) Members() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.alive))
	for name := range m.alive {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Addresses of alive members whose names start with prefix, sorted.
func (m *Member) Addresses(prefix string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name, addr := range m.alive {
		if strings.HasPrefix(name, prefix) {
			out = append(out, addr)
		}
	}
	slices.Sort(out)
	return out
}

func (m *Member) setAlive(n *memberlist.Node, alive bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if alive {
		addr := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
		m.alive[n.Name], m.known[n.Name] = addr, addr
	} else {
		delete(m.alive, n.Name)
	}
}

// Answers reports whether the member name answers a ping from this member
// itself within the probe timeout (one try: a real death waits for it). It is a second opinion
// on a death another member gossiped: memberlist takes "dead" from anyone,
// and a member cut off from the rest declares them all dead and says so as
// soon as its link is back. They refute it within moments, but a leader
// acting on it first would move a healthy node's agents.
func (m *Member) Answers(name string) bool {
	m.mu.Lock()
	addr, ok := m.known[name]
	m.mu.Unlock()
	if !ok {
		return false
	}
	udp, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return false
	}
	_, err = m.list.Ping(name, udp)
	return err == nil
}

// Leave announces a graceful departure, then stops.
func (m *Member) Leave(timeout time.Duration) error {
	err := m.list.Leave(timeout)
	return errors.Join(err, m.list.Shutdown())
}

// Shutdown stops without a word, as a crash would.
func (m *Member) Shutdown() error { return m.list.Shutdown() }

type events struct {
	cfg    Config
	member *Member
}

func (e *events) NotifyJoin(n *memberlist.Node) {
	e.member.setAlive(n, true)
	if e.cfg.OnAlive != nil {
		e.cfg.OnAlive(n.Name)
	}
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	e.member.setAlive(n, false)
	if e.cfg.OnDead != nil {
		e.cfg.OnDead(n.Name)
	}
}

func (e *events) NotifyUpdate(n *memberlist.Node) { e.member.setAlive(n, true) }

// slogWriter turns memberlist's log lines ("[LEVEL] memberlist: ...") into slog.
type slogWriter struct{ logger *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		w.logger.Error(strings.TrimSpace(strings.TrimPrefix(line, "[ERR]")))
	case strings.HasPrefix(line, "[WARN]"):
		w.logger.Warn(strings.TrimSpace(strings.TrimPrefix(line, "[WARN]")))
	default:
		w.logger.Debug(line)
	}
	return len(p), nil
}

var _ io.Writer = (*slogWriter)(nil)
