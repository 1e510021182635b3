// Package containerd is the node agent's containerd driver: each agent runs
// as one containerd container in the "agenthost" namespace, confined by CPU
// quota, memory and pids limits, no-new-privileges, the default seccomp
// profile and a short capability list, in a network namespace of its own that
// a Network wires up. Its workspace is a directory on the node mounted at
// /workspace; its stdout and stderr go to a size-capped file (logcap.go).
//
// It talks to Debian's containerd 1.6 daemon through the 1.7 client, using
// only APIs both have. cmd/agenthost picks it; the reconcile loop sees only
// driver.Driver.
package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/agenthost/agenthost/nodeagent/driver"
)

// Labels on every container this driver creates.
const (
	labelManaged = "agenthost.managed"
	labelAgent   = "agenthost.agent"
	labelNetNS   = "agenthost.netns"
	labelAddress = "agenthost.address"
)

// Paths inside the container.
const (
	WorkspacePath = "/workspace"
	ConfigPath    = "/etc/agenthost"
)

// capabilities an agent keeps: enough to install packages and manage files as
// root inside its own container, without raw sockets, device nodes, mounts or
// kernel access.
var capabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_NET_BIND_SERVICE",
}

// Network gives a container its network: a namespace with an address, and
// HostPort on this node forwarded to RuntimePort inside. Teardown undoes it.
type Network interface {
	Setup(ctx context.Context, agentID string, hostPort, runtimePort int) (netnsPath, address string, err error)
	Teardown(ctx context.Context, agentID, netnsPath string, hostPort, runtimePort int) error
}

// Config configures the driver.
type Config struct {
	// Address is containerd's socket.
	Address string
	// Namespace isolates agenthost's containers and images from others'.
	Namespace string
	// Snapshotter prepares container filesystems.
	Snapshotter string
	// DataDir holds each agent's workspace, config files and logs.
	DataDir string
	// ResolvConf is the host file whose name servers agents use; loopback
	// servers (a local resolver) cannot be reached from an agent's network
	// and are left out. Empty means /etc/resolv.conf, or systemd-resolved's
	// upstream list when /etc/resolv.conf names only a local resolver.
	ResolvConf string
	// LogMaxBytes caps an agent's log file (it rotates once).
	LogMaxBytes int64
	// LogCheckInterval is how often log files are checked against the cap.
	LogCheckInterval time.Duration
	// PidsLimit is the default process limit per container.
	PidsLimit int64
	// Network wires container networking; nil leaves each container in an
	// empty network namespace of its own (no connectivity at all).
	Network Network
	Logger  *slog.Logger
}

// DefaultConfig returns the settings for Debian's containerd.
func DefaultConfig() Config {
	return Config{
		Address:          "/run/containerd/containerd.sock",
		Namespace:        "agenthost",
		Snapshotter:      "overlayfs",
		DataDir:          "/var/lib/agenthost/node",
		LogMaxBytes:      10 << 20,
		LogCheckInterval: 5 * time.Second,
		PidsLimit:        1024,
		Logger:           slog.Default(),
	}
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.Address == "" || c.Namespace == "" || c.Snapshotter == "" || c.DataDir == "" {
		errs = append(errs, errors.New("containerd address, namespace, snapshotter and data dir are required"))
	}
	if c.LogMaxBytes < 4096 || c.LogCheckInterval <= 0 || c.PidsLimit < 1 {
		errs = append(errs, errors.New("log cap must be at least 4 KiB, its check interval and the pids limit positive"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger is required"))
	}
	return errors.Join(errs...)
}

// Driver runs agents as containerd containers.
type Driver struct {
	cfg    Config
	client *containerd.Client
	logger *slog.Logger
	stop   context.CancelFunc
}

var _ driver.Driver = (*Driver)(nil)

// New connects to containerd.
func New(cfg Config) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("containerd driver config: %w", err)
	}
	client, err := containerd.New(cfg.Address, containerd.WithDefaultNamespace(cfg.Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", cfg.Address, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	d := &Driver{cfg: cfg, client: client, logger: cfg.Logger.With("component", "containerd"), stop: stop}
	go d.capLogsLoop(ctx)
	return d, nil
}

// Close stops capping logs and disconnects from containerd; containers keep
// running.
func (d *Driver) Close() error {
	d.stop()
	return d.client.Close()
}

func (d *Driver) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, d.cfg.Namespace)
}

// ImportImage imports an OCI or Docker image archive (offline) and unpacks it.
// It returns the image names the archive carried.
func (d *Driver) ImportImage(ctx context.Context, archive io.Reader) ([]string, error) {
	ctx = d.ctx(ctx)
	imgs, err := d.client.Import(ctx, archive, containerd.WithAllPlatforms(false))
	if err != nil {
		return nil, fmt.Errorf("import image: %w", err)
	}
	var names []string
	for _, img := range imgs {
		if err := containerd.NewImage(d.client, img).Unpack(ctx, d.cfg.Snapshotter); err != nil {
			return nil, fmt.Errorf("unpack %s: %w", img.Name, err)
		}
		names = append(names, img.Name)
	}
	return names, nil
}

// PullImage pulls an image by reference (needs a reachable registry).
func (d *Driver) PullImage(ctx context.Context, ref string) error {
	_, err := d.client.Pull(d.ctx(ctx), ref, containerd.WithPullUnpack, containerd.WithPullSnapshotter(d.cfg.Snapshotter))
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	return nil
}

// AgentDir is where an agent's workspace, config files and logs live.
func (d *Driver) AgentDir(agentID string) string {
	return filepath.Join(d.cfg.DataDir, "agents", agentID)
}

// LogPath is the agent's current log file (the previous one is LogPath+".1").
func (d *Driver) LogPath(agentID string) string {
	return filepath.Join(d.AgentDir(agentID), driver.AgentLogName)
}

// WorkspaceDir is the host directory mounted at /workspace.
func (d *Driver) WorkspaceDir(agentID string) string {
	return filepath.Join(d.AgentDir(agentID), "workspace")
}

// ConfigDir is the host directory mounted read-only at /etc/agenthost; the
// node agent writes the agent's config files there before Create.
func (d *Driver) ConfigDir(agentID string) string {
	return filepath.Join(d.AgentDir(agentID), "config")
}

// Dirs reports the agent's workspace and config directories.
func (d *Driver) Dirs(agentID string) driver.Dirs {
	return driver.Dirs{Workspace: d.WorkspaceDir(agentID), Config: d.ConfigDir(agentID), ConfigSeenAt: ConfigPath}
}

// prepareDirs makes the agent's directories. The workspace belongs to the
// image's user, so that a runtime that does not run as root can work in it;
// the config directory is readable by that user and writable only by the
// node agent (it holds no secret: those travel as environment).
func (d *Driver) prepareDirs(ctx context.Context, agentID string, image containerd.Image) error {
	// The agent's directory holds its log and resolv.conf: the node's
	// business only (the config directory inside may have been made first,
	// with its parents, when the runtime's configuration was written).
	if err := os.MkdirAll(d.AgentDir(agentID), 0o700); err != nil {
		return err
	}
	if err := os.Chmod(d.AgentDir(agentID), 0o700); err != nil {
		return err
	}
	uid, gid, err := imageUser(ctx, image)
	if err != nil {
		return err
	}
	ws := d.WorkspaceDir(agentID)
	if err := os.MkdirAll(ws, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", ws, err)
	}
	if err := os.Lchown(ws, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", ws, err)
	}
	cfg := d.ConfigDir(agentID)
	if err := os.MkdirAll(cfg, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", cfg, err)
	}
	if err := os.Chmod(cfg, 0o755); err != nil {
		return err
	}
	return os.WriteFile(d.resolvConfPath(agentID), agentResolvConf(d.cfg.ResolvConf), 0o644)
}

func (d *Driver) resolvConfPath(agentID string) string {
	return filepath.Join(d.AgentDir(agentID), "resolv.conf")
}

// agentResolvConf is the resolv.conf an agent gets: the host's name servers
// that an agent's network namespace can reach, and its search domains.
func agentResolvConf(source string) []byte {
	sources := []string{source}
	if source == "" {
		sources = []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"}
	}
	for _, path := range sources {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var out, servers []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) >= 2 && f[0] == "nameserver":
				// Loopback and link-local servers are out of an agent's
				// reach (its own namespace; the firewall).
				if ip, err := netip.ParseAddr(f[1]); err == nil && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
					servers = append(servers, "nameserver "+ip.String())
				}
			case len(f) >= 2 && (f[0] == "search" || f[0] == "options"):
				out = append(out, strings.Join(f, " "))
			}
		}
		if len(servers) > 0 {
			return []byte(strings.Join(append(servers, out...), "\n") + "\n")
		}
	}
	return []byte("# the host has no name server an agent can reach\n")
}

// imageUser reads the numeric user the image runs as ("uid" or "uid:gid";
// root when unset). A user given by name would need the image's
// /etc/passwd: runtime images must give numbers.
func imageUser(ctx context.Context, image containerd.Image) (int, int, error) {
	spec, err := image.Spec(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("read image config: %w", err)
	}
	user := spec.Config.User
	if user == "" {
		return 0, 0, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	uid, err := strconv.Atoi(u)
	if err != nil || uid < 0 {
		return 0, 0, fmt.Errorf("image user %q: runtime images must give a numeric uid[:gid]", user)
	}
	gid := uid
	if hasGroup {
		if gid, err = strconv.Atoi(g); err != nil || gid < 0 {
			return 0, 0, fmt.Errorf("image user %q: runtime images must give a numeric uid[:gid]", user)
		}
	}
	return uid, gid, nil
}

// Create makes the agent's container and starts it. An existing container
// for the agent is started if needed, never duplicated.
func (d *Driver) Create(ctx context.Context, spec driver.AgentSpec) (driver.Container, error) {
	if spec.AgentID == "" || spec.Image == "" {
		return driver.Container{}, errors.New("agent spec needs an agent id and an image")
	}
	ctx = d.ctx(ctx)
	if _, err := d.client.LoadContainer(ctx, spec.AgentID); err == nil {
		return d.Start(ctx, spec.AgentID, nil)
	}
	image, err := d.client.GetImage(ctx, spec.Image)
	if errdefs.IsNotFound(err) {
		return driver.Container{}, fmt.Errorf("%w: %s", driver.ErrImageMissing, spec.Image)
	} else if err != nil {
		return driver.Container{}, fmt.Errorf("look up image %s: %w", spec.Image, err)
	}
	if err := d.prepareDirs(ctx, spec.AgentID, image); err != nil {
		return driver.Container{}, err
	}

	labels := map[string]string{labelManaged: "true", labelAgent: spec.AgentID, labelEnvKeys: envKeys(spec.Env)}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	netnsPath, address := "", ""
	if d.cfg.Network != nil {
		netnsPath, address, err = d.cfg.Network.Setup(ctx, spec.AgentID, spec.HostPort, spec.RuntimePort)
		if err != nil {
			return driver.Container{}, fmt.Errorf("set up network: %w", err)
		}
		labels[labelNetNS] = netnsPath
		labels[labelAddress] = address
		labels["agenthost.host-port"] = strconv.Itoa(spec.HostPort)
		labels["agenthost.runtime-port"] = strconv.Itoa(spec.RuntimePort)
	}
	specOpts := []oci.SpecOpts{
		oci.WithImageConfig(image),
		oci.WithHostname("agent"),
		oci.WithEnv(spec.Env),
		oci.WithNoNewPrivileges,
		seccomp.WithDefaultProfile(),
		oci.WithCapabilities(capabilities),
		oci.WithPidsLimit(cmpOr(spec.PidsLimit, d.cfg.PidsLimit)),
		oci.WithMounts([]specs.Mount{
			{Destination: WorkspacePath, Type: "bind", Source: d.WorkspaceDir(spec.AgentID), Options: []string{"rbind", "rw"}},
			{Destination: ConfigPath, Type: "bind", Source: d.ConfigDir(spec.AgentID), Options: []string{"rbind", "ro"}},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: d.resolvConfPath(spec.AgentID), Options: []string{"rbind", "ro"}},
		}),
		oci.WithProcessCwd(WorkspacePath),
	}
	if spec.MemoryMB > 0 {
		specOpts = append(specOpts, oci.WithMemoryLimit(uint64(spec.MemoryMB)<<20))
	}
	if spec.CPUMillis > 0 {
		const period = 100000 // µs
		specOpts = append(specOpts, oci.WithCPUCFS(spec.CPUMillis*period/1000, period))
	}
	if netnsPath != "" {
		specOpts = append(specOpts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netnsPath}))
	}
	container, err := d.client.NewContainer(ctx, spec.AgentID,
		containerd.WithImage(image),
		containerd.WithSnapshotter(d.cfg.Snapshotter),
		containerd.WithNewSnapshot(spec.AgentID, image),
		containerd.WithContainerLabels(labels),
		containerd.WithNewSpec(specOpts...),
	)
	if err != nil {
		if d.cfg.Network != nil {
			d.cfg.Network.Teardown(ctx, spec.AgentID, netnsPath, spec.HostPort, spec.RuntimePort)
		}
		return driver.Container{}, fmt.Errorf("create container: %w", err)
	}
	if err := d.startTask(ctx, container); err != nil {
		return driver.Container{}, err
	}
	return d.describe(ctx, container)
}

func cmpOr(v, fallback int64) int64 {
	if v > 0 {
		return v
	}
	return fallback
}

// startTask starts a fresh task for container, deleting an exited one first.
func (d *Driver) startTask(ctx context.Context, container containerd.Container) error {
	if task, err := container.Task(ctx, nil); err == nil {
		st, err := task.Status(ctx)
		if err != nil {
			return fmt.Errorf("task status: %w", err)
		}
		if st.Status == containerd.Running {
			return nil
		}
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete exited task: %w", err)
		}
	}
	task, err := container.NewTask(ctx, cio.LogFile(d.LogPath(container.ID())))
	if err != nil {
		return fmt.Errorf("create task: %w", err)
	}
	if err := task.Start(ctx); err != nil {
		task.Delete(ctx, containerd.WithProcessKill)
		return fmt.Errorf("start task: %w", err)
	}
	return nil
}

// Start starts a stopped agent again; its workspace is untouched.
func (d *Driver) Start(ctx context.Context, agentID string, env []string) (driver.Container, error) {
	ctx = d.ctx(ctx)
	container, err := d.client.LoadContainer(ctx, agentID)
	if errdefs.IsNotFound(err) {
		return driver.Container{}, fmt.Errorf("%w: %s", driver.ErrNotFound, agentID)
	} else if err != nil {
		return driver.Container{}, err
	}
	if env != nil {
		if err := d.setEnv(ctx, container, env); err != nil {
			return driver.Container{}, err
		}
	}
	if err := d.startTask(ctx, container); err != nil {
		return driver.Container{}, err
	}
	return d.describe(ctx, container)
}

// labelEnvKeys lists the names of the variables the agent's spec added to
// the image's environment, so that a later setEnv can take them out again
// (a deleted secret must not linger) while keeping the image's own.
const labelEnvKeys = "agenthost.env-keys"

// setEnv replaces the agent's part of a stopped container's environment.
// A running task keeps the environment it started with.
func (d *Driver) setEnv(ctx context.Context, container containerd.Container, env []string) error {
	labels, err := container.Labels(ctx)
	if err != nil {
		return err
	}
	spec, err := container.Spec(ctx)
	if err != nil {
		return err
	}
	old := map[string]bool{}
	for _, k := range strings.Split(labels[labelEnvKeys], ",") {
		old[k] = k != ""
	}
	var kept []string
	if spec.Process != nil {
		for _, kv := range spec.Process.Env {
			if k, _, _ := strings.Cut(kv, "="); !old[k] {
				kept = append(kept, kv)
			}
		}
	}
	if spec.Process == nil {
		return errors.New("the container has no process spec")
	}
	spec.Process.Env = kept
	if err := oci.WithEnv(env)(ctx, nil, nil, spec); err != nil {
		return err
	}
	if err := container.Update(ctx, containerd.UpdateContainerOpts(containerd.WithSpec(spec))); err != nil {
		return fmt.Errorf("update the container's environment: %w", err)
	}
	_, err = container.SetLabels(ctx, map[string]string{labelEnvKeys: envKeys(env)})
	return err
}

func envKeys(env []string) string {
	keys := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		keys = append(keys, k)
	}
	return strings.Join(keys, ",")
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs. The exited task is
// kept so that its exit status (and an OOM kill) can still be read.
func (d *Driver) Stop(ctx context.Context, agentID string, grace time.Duration) error {
	ctx = d.ctx(ctx)
	container, err := d.client.LoadContainer(ctx, agentID)
	if errdefs.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	task, err := container.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	st, err := task.Status(ctx)
	if err != nil || st.Status != containerd.Running {
		return err
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return fmt.Errorf("wait for task: %w", err)
	}
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("send SIGTERM: %w", err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(grace):
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("send SIGKILL: %w", err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("agent %s did not exit after SIGKILL", agentID)
	}
}

// networkTeardownTimeout bounds an agent's network teardown, which Delete
// does not let its caller's cancellation cut short.
const networkTeardownTimeout = 30 * time.Second

// Delete removes the container, its snapshot, its network and its directory
// (workspace, config, logs).
func (d *Driver) Delete(ctx context.Context, agentID string) error {
	ctx = d.ctx(ctx)
	container, err := d.client.LoadContainer(ctx, agentID)
	switch {
	case errdefs.IsNotFound(err):
	case err != nil:
		return err
	default:
		labels, err := container.Labels(ctx)
		if err != nil {
			return err
		}
		if err := deleteTask(ctx, container); err != nil {
			return err
		}
		// The network goes before the container record: the record holds
		// what teardown needs (namespace, ports), so a teardown that fails
		// leaves it for the next try instead of leaking the namespace and
		// the port's forwarding rules. Teardown runs to its end even when
		// ctx is cancelled (a node agent shutting down): a CNI plugin
		// killed half-way leaves rules behind.
		if d.cfg.Network != nil && labels[labelNetNS] != "" {
			hostPort, _ := strconv.Atoi(labels["agenthost.host-port"])
			runtimePort, _ := strconv.Atoi(labels["agenthost.runtime-port"])
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), networkTeardownTimeout)
			err := d.cfg.Network.Teardown(tctx, agentID, labels[labelNetNS], hostPort, runtimePort)
			cancel()
			if err != nil {
				return fmt.Errorf("tear down network: %w", err)
			}
		}
		if err := container.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete container: %w", err)
		}
	}
	if err := os.RemoveAll(d.AgentDir(agentID)); err != nil {
		return fmt.Errorf("remove agent directory: %w", err)
	}
	return nil
}

// deleteTask kills and deletes the container's task, if it has one. The shim
// exits as the task goes, and containerd 1.6 sometimes reports that as an
// error ("ttrpc: closed") although the task is gone; what counts is whether a
// task is left, so on an error the task is looked up again, and a delete that
// really failed is tried once more.
func deleteTask(ctx context.Context, container containerd.Container) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		task, lookupErr := container.Task(ctx, nil)
		if errdefs.IsNotFound(lookupErr) {
			return nil
		}
		if lookupErr != nil {
			err = lookupErr
			continue
		}
		if _, err = task.Delete(ctx, containerd.WithProcessKill); err == nil || errdefs.IsNotFound(err) {
			return nil
		}
	}
	return fmt.Errorf("delete task: %w", err)
}

// List reports every container this driver manages.
func (d *Driver) List(ctx context.Context) ([]driver.Container, error) {
	ctx = d.ctx(ctx)
	containers, err := d.client.Containers(ctx, fmt.Sprintf("labels.%q==true", labelManaged))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]driver.Container, 0, len(containers))
	for _, c := range containers {
		desc, err := d.describe(ctx, c)
		if errdefs.IsNotFound(err) {
			continue // deleted meanwhile
		} else if err != nil {
			return nil, err
		}
		out = append(out, desc)
	}
	return out, nil
}

// describe reports a container's state, and for an exited task its exit code
// and whether the kernel's OOM killer ended it.
func (d *Driver) describe(ctx context.Context, c containerd.Container) (driver.Container, error) {
	labels, err := c.Labels(ctx)
	if err != nil {
		return driver.Container{}, err
	}
	out := driver.Container{AgentID: c.ID(), State: driver.StateCreated, Labels: labels, Address: labels[labelAddress]}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return out, nil
	} else if err != nil {
		return driver.Container{}, err
	}
	st, err := task.Status(ctx)
	if err != nil {
		return driver.Container{}, err
	}
	switch st.Status {
	case containerd.Running, containerd.Paused, containerd.Pausing:
		out.State = driver.StateRunning
	case containerd.Stopped:
		out.State = driver.StateStopped
		out.ExitCode, out.ExitedAt = st.ExitStatus, st.ExitTime
		out.OOMKilled = d.oomKilled(ctx, task)
	}
	return out, nil
}

// oomKilled reads the task's cgroup OOM-kill counter; the cgroup lives until
// the task is deleted, so this works on an exited task.
func (d *Driver) oomKilled(ctx context.Context, task containerd.Task) bool {
	m, err := task.Metrics(ctx)
	if err != nil {
		return false
	}
	data, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return false
	}
	switch s := data.(type) {
	case *v1.Metrics:
		return s.MemoryOomControl != nil && s.MemoryOomControl.OomKill > 0
	case *v2.Metrics:
		return s.MemoryEvents != nil && s.MemoryEvents.OomKill > 0
	}
	return false
}

// Stats reports a running container's CPU, memory and pids.
func (d *Driver) Stats(ctx context.Context, agentID string) (driver.Stats, error) {
	ctx = d.ctx(ctx)
	container, err := d.client.LoadContainer(ctx, agentID)
	if errdefs.IsNotFound(err) {
		return driver.Stats{}, fmt.Errorf("%w: %s", driver.ErrNotFound, agentID)
	} else if err != nil {
		return driver.Stats{}, err
	}
	task, err := container.Task(ctx, nil)
	if err != nil {
		return driver.Stats{}, fmt.Errorf("%w: %s has no task", driver.ErrNotFound, agentID)
	}
	m, err := task.Metrics(ctx)
	if err != nil {
		return driver.Stats{}, fmt.Errorf("task metrics: %w", err)
	}
	data, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return driver.Stats{}, fmt.Errorf("decode metrics: %w", err)
	}
	var st driver.Stats
	switch s := data.(type) {
	case *v1.Metrics:
		if s.CPU != nil && s.CPU.Usage != nil {
			st.CPUNanos = s.CPU.Usage.Total
		}
		if s.Memory != nil && s.Memory.Usage != nil {
			st.MemoryBytes, st.MemoryLimit = s.Memory.Usage.Usage, s.Memory.Usage.Limit
		}
		if s.Pids != nil {
			st.Pids, st.PidsLimit = s.Pids.Current, s.Pids.Limit
		}
	case *v2.Metrics:
		if s.CPU != nil {
			st.CPUNanos = s.CPU.UsageUsec * 1000
		}
		if s.Memory != nil {
			st.MemoryBytes, st.MemoryLimit = s.Memory.Usage, s.Memory.UsageLimit
		}
		if s.Pids != nil {
			st.Pids, st.PidsLimit = s.Pids.Current, s.Pids.Limit
		}
	default:
		return driver.Stats{}, fmt.Errorf("unknown metrics type %T", data)
	}
	return st, nil
}

// NodeTotals sums the resource use of every running agent on this node.
func (d *Driver) NodeTotals(ctx context.Context) (driver.Stats, error) {
	list, err := d.List(ctx)
	if err != nil {
		return driver.Stats{}, err
	}
	var total driver.Stats
	for _, c := range list {
		if c.State != driver.StateRunning {
			continue
		}
		st, err := d.Stats(ctx, c.AgentID)
		if errors.Is(err, driver.ErrNotFound) {
			continue // stopped meanwhile
		} else if err != nil {
			return driver.Stats{}, err
		}
		total.CPUNanos += st.CPUNanos
		total.MemoryBytes += st.MemoryBytes
		total.MemoryLimit += st.MemoryLimit
		total.Pids += st.Pids
		total.PidsLimit += st.PidsLimit
	}
	return total, nil
}
