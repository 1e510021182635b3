package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/agenthost/agenthost/internal/ociarchive"
)

// sourceDateEpoch is SOURCE_DATE_EPOCH for mmdebstrap and the time every
// file in the image is clamped to: bookworm's release day, 2023-06-10. A
// fixed time makes the layers depend only on what is in them.
const sourceDateEpoch = 1686355200

var epoch = time.Unix(sourceDateEpoch, 0)

// dpkgOptions leave out what agents do not read, as debian:bookworm-slim
// does: man pages, info, translations and docs other than copyright files.
// They stay in /etc/dpkg/dpkg.cfg.d, so they hold for later installs too.
var dpkgOptions = []string{
	"path-exclude=/usr/share/man/*",
	"path-exclude=/usr/share/info/*",
	"path-exclude=/usr/share/doc/*",
	"path-include=/usr/share/doc/*/copyright",
	"path-exclude=/usr/share/locale/*",
	"path-include=/usr/share/locale/locale.alias",
	"path-exclude=/usr/share/lintian/*",
}

// cleanupHook removes what mmdebstrap copies from the host (resolv.conf,
// hostname: the runtime provides them) and files that only record the
// build. mmdebstrap itself removes the apt lists and package cache.
const cleanupHook = `rm -f "$1"/etc/resolv.conf "$1"/etc/hostname "$1"/var/lib/dpkg/*-old "$1"/var/cache/debconf/*-old "$1"/var/log/apt/eipp.log.xz`

// readPackages returns the package names in a packages.txt: one a line,
// blank lines and `#` comments ignored.
func readPackages(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pkgs []string
	for i, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.ContainsAny(line, " \t,") {
			return nil, fmt.Errorf("%s:%d: one package a line, got %q", path, i+1, line)
		}
		pkgs = append(pkgs, line)
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("%s lists no packages", path)
	}
	return pkgs, nil
}

// mmdebstrapArgs is the whole mmdebstrap command line but the output path.
func (c Config) mmdebstrapArgs(pkgs []string) []string {
	args := []string{"--mode=root", "--variant=apt", "--format=tar", "--include=" + strings.Join(pkgs, ",")}
	for _, o := range dpkgOptions {
		args = append(args, "--dpkgopt="+o)
	}
	args = append(args, "--customize-hook="+cleanupHook)
	// The sources file comes last: mmdebstrap reads a mirror argument that
	// names an existing file as a sources.list (deb822 or one-line).
	return append(args, c.Suite, "OUTPUT", c.SourcesFile)
}

// rootfs returns the mmdebstrap tarball for pkgs, built once per command
// line and sources content and kept in the cache.
func (c Config) rootfs(pkgs []string, say func(string, ...any)) (string, error) {
	args := c.mmdebstrapArgs(pkgs)
	sources, err := os.ReadFile(c.SourcesFile)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%q\x00%d\x00", args, sourceDateEpoch)
	h.Write(sources)
	key := hex.EncodeToString(h.Sum(nil))[:16]
	cache := filepath.Join(c.path(c.OutDir), cacheDir)
	path := filepath.Join(cache, "rootfs-"+key+".tar")
	if info, err := os.Stat(path); err == nil && !c.Force {
		say("[1/4] rootfs: Debian %s with %d packages, cached (%s, %s)", c.Suite, len(pkgs), filepath.Base(path), mib(info.Size()))
		return path, nil
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return "", errors.New("mmdebstrap is missing: run `make setup` (Debian package mmdebstrap)")
	}
	say("[1/4] rootfs: mmdebstrap %s, %d packages, sources %s", c.Suite, len(pkgs), c.SourcesFile)
	start := time.Now()
	tmp := path + ".partial"
	args[len(args)-2] = tmp
	cmd := exec.Command("mmdebstrap", args...)
	// mmdebstrap's progress (I: lines) goes to the caller's output as is.
	cmd.Stdout, cmd.Stderr = c.Out, c.Out
	// Its temporary root filesystem goes beside the output, not to a /tmp
	// that may be a small tmpfs.
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+strconv.Itoa(sourceDateEpoch), "TMPDIR="+cache)
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("mmdebstrap: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	// Older root filesystems are for inputs no longer current.
	old, _ := filepath.Glob(filepath.Join(cache, "rootfs-*.tar"))
	for _, o := range old {
		if o != path {
			os.Remove(o)
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	say("      rootfs: %s in %s", mib(info.Size()), since(start))
	return path, nil
}

// writeRootfsLayer turns the mmdebstrap tarball into the base layer:
// names without "./", no device nodes (the runtime makes /dev), times
// clamped to the epoch, and of the PAX records only extended attributes
// (file capabilities) kept.
func writeRootfsLayer(path, rootfs string) (ociarchive.Layer, error) {
	f, err := os.Open(rootfs)
	if err != nil {
		return ociarchive.Layer{}, err
	}
	defer f.Close()
	return ociarchive.WriteLayer(path, func(tw *tar.Writer) error {
		tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", rootfs, err)
			}
			if !normalize(hdr) {
				continue
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if hdr.Typeflag == tar.TypeReg {
				if _, err := io.Copy(tw, tr); err != nil {
					return err
				}
			}
		}
	})
}

// normalize rewrites a root filesystem entry for a layer, and reports
// whether the layer keeps it.
func normalize(hdr *tar.Header) bool {
	hdr.Name = strings.TrimPrefix(hdr.Name, "./")
	if hdr.Name == "" || hdr.Name == "/" {
		return false // the root directory itself
	}
	if strings.HasPrefix(hdr.Name, "dev/") && hdr.Name != "dev/" {
		return false
	}
	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return false
	case tar.TypeLink:
		hdr.Linkname = strings.TrimPrefix(hdr.Linkname, "./")
	}
	if hdr.ModTime.After(epoch) {
		hdr.ModTime = epoch
	}
	hdr.ModTime = hdr.ModTime.Truncate(time.Second)
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	records := map[string]string{}
	for k, v := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			records[k] = v
		}
	}
	// The reader fills the deprecated Xattrs from the same records.
	hdr.PAXRecords, hdr.Xattrs = records, nil
	hdr.Format = tar.FormatUnknown
	return true
}
