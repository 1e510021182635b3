package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/agenthost/agenthost/internal/ociarchive"
)

// ImageName is the reference the archive carries: the node agent's default
// runtime image (nodeagent.DefaultConfig, checked by the tests).
const ImageName = "agenthost.local/opencode:latest"

// Files in Config.OutDir.
const (
	ArchiveName = "opencode-runtime.oci.tar"
	StampName   = "opencode-runtime.stamp"
	cacheDir    = "cache"
	lockName    = ".lock"
)

// Config is one build's settings.
type Config struct {
	// Root is the repository root; relative paths below are under it.
	Root string
	// InputDir holds packages.txt, entrypoint.sh and opencode-version.
	InputDir string
	// OutDir receives the archive, its stamp, and cache/ with the
	// intermediate files (the mmdebstrap tarball, OpenCode's npm tarball).
	OutDir string
	// OpenCodeVersion is the opencode-ai version to ship; empty means the
	// one in InputDir/opencode-version.
	OpenCodeVersion string
	// Suite is the Debian release of the root filesystem.
	Suite string
	// SourcesFile is the apt sources file (deb822 or one-line style)
	// mmdebstrap downloads from; empty means the host's.
	SourcesFile string
	// Force rebuilds everything, ignoring the stamp and the caches.
	Force bool
	// Out receives progress lines.
	Out io.Writer
}

// DefaultConfig returns the settings `make runtime-image` uses, for the
// repository at root.
func DefaultConfig(root string) Config {
	return Config{
		Root:     root,
		InputDir: "deploy/runtime",
		OutDir:   "build/runtime",
		Suite:    "bookworm",
		Out:      os.Stdout,
	}
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.Root == "" || c.InputDir == "" || c.OutDir == "" || c.Suite == "" || c.Out == nil {
		errs = append(errs, errors.New("root, input dir, output dir, suite and output writer are required"))
	}
	if c.OpenCodeVersion != "" && strings.ContainsAny(c.OpenCodeVersion, " \t\n/@") {
		errs = append(errs, fmt.Errorf("OpenCode version %q is not an npm version", c.OpenCodeVersion))
	}
	return errors.Join(errs...)
}

// path resolves a path relative to Root.
func (c Config) path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Root, p)
}

// ArchivePath is where the image archive goes.
func (c Config) ArchivePath() string { return filepath.Join(c.path(c.OutDir), ArchiveName) }

// StampPath is where the archive's cache key and figures go.
func (c Config) StampPath() string { return filepath.Join(c.path(c.OutDir), StampName) }

// hostSources returns the host's apt sources file.
func hostSources() (string, error) {
	for _, p := range []string{"/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"} {
		if info, err := os.Stat(p); err == nil && info.Size() > 0 {
			return p, nil
		}
	}
	return "", errors.New("no apt sources: neither /etc/apt/sources.list.d/debian.sources nor /etc/apt/sources.list exists")
}

// resolve fills the defaults that come from files.
func (c Config) resolve() (Config, error) {
	if err := c.Validate(); err != nil {
		return c, err
	}
	if c.OpenCodeVersion == "" {
		b, err := os.ReadFile(filepath.Join(c.path(c.InputDir), "opencode-version"))
		if err != nil {
			return c, fmt.Errorf("read the OpenCode version: %w", err)
		}
		c.OpenCodeVersion = strings.TrimSpace(string(b))
		if err := c.Validate(); err != nil || c.OpenCodeVersion == "" {
			return c, fmt.Errorf("%s/opencode-version must hold one npm version, has %q", c.InputDir, b)
		}
	}
	if c.SourcesFile == "" {
		p, err := hostSources()
		if err != nil {
			return c, err
		}
		c.SourcesFile = p
	}
	return c, nil
}

// findRoot returns the nearest directory upwards from dir holding go.mod.
func findRoot(dir string) (string, error) {
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the repository (no go.mod above the working directory)")
		}
		dir = parent
	}
}

func main() {
	wd, err := os.Getwd()
	if err == nil {
		wd, err = findRoot(wd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "runtime-image:", err)
		os.Exit(1)
	}
	cfg := DefaultConfig(wd)
	flag.StringVar(&cfg.OutDir, "out", cfg.OutDir, "output directory (relative to the repository root)")
	flag.StringVar(&cfg.OpenCodeVersion, "opencode-version", "", "opencode-ai version (default: deploy/runtime/opencode-version)")
	flag.StringVar(&cfg.Suite, "suite", cfg.Suite, "Debian suite")
	flag.StringVar(&cfg.SourcesFile, "sources", "", "apt sources file (default: the host's)")
	flag.BoolVar(&cfg.Force, "force", false, "rebuild everything, ignoring the stamp and the caches")
	flag.Parse()
	if _, err := Build(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "runtime-image:", err)
		os.Exit(1)
	}
}

// Build builds the archive unless its stamp says it is up to date, and
// returns the stamp describing it.
func Build(cfg Config) (Stamp, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return Stamp{}, err
	}
	say := func(format string, args ...any) { fmt.Fprintf(cfg.Out, "runtime-image: "+format+"\n", args...) }
	out := cfg.path(cfg.OutDir)
	if err := os.MkdirAll(filepath.Join(out, cacheDir), 0o755); err != nil {
		return Stamp{}, err
	}
	unlock, err := lock(filepath.Join(out, lockName), func() { say("waiting for another build in %s", cfg.OutDir) })
	if err != nil {
		return Stamp{}, err
	}
	defer unlock()

	// Work directories of an interrupted build; the lock says none is in
	// use. (mmdebstrap's own may hold mounts and are left to it.)
	stale, _ := filepath.Glob(filepath.Join(out, cacheDir, "layers-*"))
	more, _ := filepath.Glob(filepath.Join(out, cacheDir, "npm-*"))
	partial, _ := filepath.Glob(filepath.Join(out, cacheDir, "*.partial"))
	archives, _ := filepath.Glob(filepath.Join(out, ArchiveName+".tmp*"))
	for _, p := range slices.Concat(stale, more, partial, archives) {
		os.RemoveAll(p)
	}

	key, err := cfg.Key()
	if err != nil {
		return Stamp{}, err
	}
	rel := filepath.Join(cfg.OutDir, ArchiveName)
	if stamp, ok := cfg.current(key); ok && !cfg.Force {
		say("%s is up to date (key %.12s, OpenCode %s, %s, manifest %s); nothing to do",
			rel, key, stamp.OpenCodeVersion, mib(stamp.ArchiveSize), stamp.Manifest)
		return stamp, nil
	}
	start := time.Now()
	say("building %s (key %.12s): Debian %s + OpenCode %s", rel, key, cfg.Suite, cfg.OpenCodeVersion)
	if os.Geteuid() != 0 {
		return Stamp{}, errors.New("the build runs mmdebstrap --mode=root: run it as root")
	}
	os.Remove(cfg.StampPath())

	pkgs, err := readPackages(filepath.Join(cfg.path(cfg.InputDir), "packages.txt"))
	if err != nil {
		return Stamp{}, err
	}
	rootfs, err := cfg.rootfs(pkgs, say)
	if err != nil {
		return Stamp{}, err
	}
	oc, err := cfg.fetchOpenCode(say)
	if err != nil {
		return Stamp{}, err
	}
	entrypoint, err := os.ReadFile(filepath.Join(cfg.path(cfg.InputDir), "entrypoint.sh"))
	if err != nil {
		return Stamp{}, err
	}

	say("[3/4] layers: compressing the root filesystem and the agent layer (gzip, in parallel)")
	layerStart := time.Now()
	work, err := os.MkdirTemp(filepath.Join(out, cacheDir), "layers-")
	if err != nil {
		return Stamp{}, err
	}
	defer os.RemoveAll(work)
	type result struct {
		layer ociarchive.Layer
		err   error
	}
	base, top := make(chan result, 1), make(chan result, 1)
	go func() {
		l, err := writeRootfsLayer(filepath.Join(work, "rootfs.tar.gz"), rootfs)
		l.CreatedBy = fmt.Sprintf("mmdebstrap --mode=root --variant=apt %s (deploy/runtime/packages.txt: %d packages)", cfg.Suite, len(pkgs))
		base <- result{l, err}
	}()
	go func() {
		l, err := writeAgentLayer(filepath.Join(work, "agent.tar.gz"), rootfs, oc, entrypoint)
		l.CreatedBy = fmt.Sprintf("opencode-linux-x64@%s as /usr/local/bin/opencode, agenthost-entrypoint, user agent (1000:1000)", cfg.OpenCodeVersion)
		top <- result{l, err}
	}()
	b, t := <-base, <-top
	if err := errors.Join(b.err, t.err); err != nil {
		return Stamp{}, err
	}
	for i, l := range []ociarchive.Layer{b.layer, t.layer} {
		say("      layer %d: %s uncompressed, %s gzip'd, %s", i+1, mib(l.UncompressedSize), mib(l.Size), l.Digest)
	}
	say("      layers took %s", since(layerStart))

	say("[4/4] archive: writing %s", rel)
	img := ociarchive.Image{Name: ImageName, Config: imageConfig(cfg.OpenCodeVersion), Layers: []ociarchive.Layer{b.layer, t.layer}}
	desc, err := ociarchive.WriteFile(cfg.ArchivePath(), img)
	if err != nil {
		return Stamp{}, fmt.Errorf("write %s: %w", rel, err)
	}
	info, err := os.Stat(cfg.ArchivePath())
	if err != nil {
		return Stamp{}, err
	}
	stamp := Stamp{
		Key: key, Image: ImageName, OpenCodeVersion: cfg.OpenCodeVersion, Suite: cfg.Suite,
		ArchiveSize: info.Size(), Manifest: desc.Digest.String(),
	}
	for _, l := range img.Layers {
		stamp.Layers = append(stamp.Layers, StampLayer{Digest: l.Digest.String(), Size: l.Size, UncompressedSize: l.UncompressedSize, CreatedBy: l.CreatedBy})
	}
	if err := cfg.writeStamp(stamp); err != nil {
		return Stamp{}, err
	}
	say("built %s: %s, image %s, manifest %s, in %s", rel, mib(info.Size()), ImageName, desc.Digest, since(start))
	return stamp, nil
}

// lock takes an exclusive lock on path, calling waiting once if another
// process holds it, so that `make runtime-image` and a test never build
// into the same directory at once.
func lock(path string, waiting func()) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		waiting()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
	}
	return func() { f.Close() }, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }
