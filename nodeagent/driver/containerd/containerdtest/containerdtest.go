// Package containerdtest starts a private containerd daemon for tests and
// builds a small OCI image offline, from Debian's static busybox, whose
// command is taken from the SCRIPT environment variable.
//
// Tests that need containerd call Require: on a machine without root or
// containerd it skips, except under CI (CI=true), where it fails — those tests
// must run in CI, never skip.
package containerdtest

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/agenthost/agenthost/internal/ociarchive"
)

// ImageName is the reference the test image is imported under.
const ImageName = "agenthost.local/test:1"

// Require skips (locally) or fails (in CI) when containerd tests cannot run.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"containerd", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if _, err := os.Stat(BusyboxPath); err != nil {
		missing = append(missing, BusyboxPath+" (busybox-static)")
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("containerd tests need %s; run `make setup` as root", strings.Join(missing, ", "))
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI must run these tests, not skip them)")
	}
	t.Skip(msg)
}

// Daemon is a containerd started for tests.
type Daemon struct {
	Address string
	dir     string
	cmd     *exec.Cmd
}

// Start runs a private containerd with its own root, state and socket under
// a short temporary directory (socket paths are limited to 108 bytes).
func Start() (*Daemon, error) {
	dir, err := os.MkdirTemp("/tmp", "ahctr-")
	if err != nil {
		return nil, err
	}
	d := &Daemon{Address: filepath.Join(dir, "containerd.sock"), dir: dir}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), d.Address, d.Address+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		return nil, err
	}
	d.cmd = exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	d.cmd.Stdout, d.cmd.Stderr = log, log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(d.Address); err == nil {
			return d, nil
		}
		if time.Now().After(deadline) {
			d.Stop()
			logs, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			return nil, fmt.Errorf("containerd did not listen within 20s:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends containerd and the shims it left, and removes its directories.
// Tasks still running are killed first: a shim killed with its task alive
// would leave the container's processes orphaned in their namespaces.
func (d *Daemon) Stop() {
	ctr := func(args ...string) *exec.Cmd {
		return exec.Command("ctr", append([]string{"--address", d.Address, "-n", "agenthost"}, args...)...)
	}
	if out, err := ctr("task", "ls", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			ctr("task", "kill", "-a", "-s", "SIGKILL", id).Run()
			ctr("task", "delete", "-f", id).Run()
		}
	}
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
		}
	}
	// Shims outlive containerd by design; end those of this daemon.
	exec.Command("pkill", "-KILL", "-f", "containerd-shim-runc-v2 .*-address "+d.Address).Run()
	exec.Command("sh", "-c", "grep "+d.dir+" /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r umount -l").Run()
	os.RemoveAll(d.dir)
}

// DefaultScript is what the image runs without SCRIPT: a stand-in runtime
// that records each boot in /workspace/boots and serves /global/health on 4096.
const DefaultScript = `echo boot >> /workspace/boots; exec httpd -f -p 4096 -h /www`

// BusyboxPath is Debian's static busybox (package busybox-static).
const BusyboxPath = "/bin/busybox"

// busyboxApplets are linked into the test image's /bin.
var busyboxApplets = []string{"sh", "httpd", "sleep", "cat", "ls", "echo", "head", "tail", "tr", "seq", "dd", "wget", "nc", "mkdir", "rm", "true", "false", "kill", "ps", "grep"}

// BuildImage writes an OCI image archive named ImageName: busybox, a web
// root /www with global/health (so that `httpd -f -p PORT -h /www` answers
// GET /global/health like a runtime), and the command `sh -c "$SCRIPT"`, or
// DefaultScript when SCRIPT is unset.
func BuildImage(ctx context.Context, path string) error {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return err
	}
	layer, err := ociarchive.WriteLayer(path+".layer", func(tw *tar.Writer) error {
		for _, dir := range []string{"bin", "tmp", "www", "www/global", "workspace", "etc", "proc", "sys", "dev", "root"} {
			tw.WriteHeader(&tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		}
		tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777})
		tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
		tw.Write(bb)
		for _, applet := range busyboxApplets {
			tw.WriteHeader(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox"})
		}
		health := []byte(`{"healthy":true,"version":"test"}`)
		tw.WriteHeader(&tar.Header{Name: "www/global/health", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(health))})
		_, err := tw.Write(health)
		return err
	})
	if err != nil {
		return err
	}
	defer os.Remove(layer.Path)
	var config ocispec.Image
	config.Architecture, config.OS = "amd64", "linux"
	config.Config.Cmd = []string{"/bin/sh", "-c", "eval \"${SCRIPT:-$DefaultScript}\""}
	config.Config.Env = []string{"PATH=/bin", "DefaultScript=" + DefaultScript}
	_, err = ociarchive.WriteFile(path, ociarchive.Image{Name: ImageName, Config: config, Layers: []ociarchive.Layer{layer}})
	return err
}
