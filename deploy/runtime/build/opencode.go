package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// The npm packages OpenCode ships in: opencode-ai holds a launcher and
// depends optionally on one package per platform, each carrying the native
// executable (a standalone bun binary; no node needed at run time).
const (
	openCodePackage      = "opencode-ai"
	openCodeLinuxPackage = "opencode-linux-x64"
	openCodeBinary       = "package/bin/opencode" // inside the npm tarball
)

// openCode is a verified npm tarball of OpenCode's Linux binary.
type openCode struct {
	// Tarball is the .tgz that npm pack wrote.
	Tarball string
	// Version and Integrity (npm's sha512-...) are what the registry listed.
	Version   string
	Integrity string
}

// packResult is one entry of `npm pack --json`.
type packResult struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Filename  string `json:"filename"`
	Integrity string `json:"integrity"`
}

// fetchOpenCode returns OpenCode's Linux binary package at the configured
// version, from the cache when its recorded integrity still matches, or else
// through npm, which checks the download against the registry's integrity
// (and takes it from its own cache when present).
func (c Config) fetchOpenCode(say func(string, ...any)) (openCode, error) {
	cache := filepath.Join(c.path(c.OutDir), cacheDir)
	oc := openCode{
		Tarball: filepath.Join(cache, fmt.Sprintf("%s-%s.tgz", openCodeLinuxPackage, c.OpenCodeVersion)),
		Version: c.OpenCodeVersion,
	}
	if integrity, err := os.ReadFile(oc.Tarball + ".integrity"); err == nil && !c.Force {
		oc.Integrity = string(integrity)
		if err := checkIntegrity(oc.Tarball, oc.Integrity); err == nil {
			info, _ := os.Stat(oc.Tarball)
			say("[2/4] opencode %s: cached %s (%s, %s)", oc.Version, filepath.Base(oc.Tarball), mib(info.Size()), oc.Integrity)
			return oc, nil
		}
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return openCode{}, errors.New("npm is missing: run `make setup` (Debian packages nodejs and npm)")
	}
	start := time.Now()
	// The platform package must be the one opencode-ai pins at this version,
	// so that the image runs what `npm install opencode-ai@VERSION` would.
	spec := openCodePackage + "@" + c.OpenCodeVersion
	say("[2/4] opencode %s: npm view %s optionalDependencies", c.OpenCodeVersion, spec)
	out, err := c.npm("view", "--json", spec, "optionalDependencies")
	if err != nil {
		return openCode{}, err
	}
	var deps map[string]string
	if err := json.Unmarshal(out, &deps); err != nil || deps[openCodeLinuxPackage] != c.OpenCodeVersion {
		return openCode{}, fmt.Errorf("%s does not depend on %s@%s (npm view said %s)", spec, openCodeLinuxPackage, c.OpenCodeVersion, bytes.TrimSpace(out))
	}

	tmp, err := os.MkdirTemp(cache, "npm-")
	if err != nil {
		return openCode{}, err
	}
	defer os.RemoveAll(tmp)
	linuxSpec := openCodeLinuxPackage + "@" + c.OpenCodeVersion
	say("      npm pack %s", linuxSpec)
	out, err = c.npm("pack", "--json", "--pack-destination", tmp, linuxSpec)
	if err != nil {
		return openCode{}, err
	}
	var packed []packResult
	if err := json.Unmarshal(out, &packed); err != nil || len(packed) != 1 {
		return openCode{}, fmt.Errorf("npm pack %s: unexpected output %s", linuxSpec, out)
	}
	p := packed[0]
	if p.Name != openCodeLinuxPackage || p.Version != c.OpenCodeVersion || p.Integrity == "" {
		return openCode{}, fmt.Errorf("npm pack %s gave %s@%s with integrity %q", linuxSpec, p.Name, p.Version, p.Integrity)
	}
	got := filepath.Join(tmp, filepath.Base(p.Filename))
	if err := checkIntegrity(got, p.Integrity); err != nil {
		return openCode{}, err
	}
	if err := os.Rename(got, oc.Tarball); err != nil {
		return openCode{}, err
	}
	oc.Integrity = p.Integrity
	if err := os.WriteFile(oc.Tarball+".integrity", []byte(p.Integrity), 0o644); err != nil {
		return openCode{}, err
	}
	info, err := os.Stat(oc.Tarball)
	if err != nil {
		return openCode{}, err
	}
	say("      %s: %s, integrity %s, in %s", filepath.Base(oc.Tarball), mib(info.Size()), p.Integrity, since(start))
	return oc, nil
}

// npm runs npm with its warnings passed on and returns its stdout.
func (c Config) npm(args ...string) ([]byte, error) {
	cmd := exec.Command("npm", append(args, "--no-fund", "--no-audit", "--no-update-notifier")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("npm %v: %w\n%s", args, err, stderr.Bytes())
	}
	return out, nil
}

// checkIntegrity checks a file against an npm integrity string (sha512-<base64>).
func checkIntegrity(path, integrity string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha512.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := "sha512-" + base64.StdEncoding.EncodeToString(h.Sum(nil)); got != integrity {
		return fmt.Errorf("%s has integrity %s, the registry lists %s", path, got, integrity)
	}
	return nil
}

// copyBinary writes OpenCode's executable from the npm tarball into tw as
// name, and checks that the tarball's package.json has the expected version.
func (oc openCode) copyBinary(tw *tar.Writer, name string) error {
	f, err := os.Open(oc.Tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", oc.Tarball, err)
	}
	tr := tar.NewReader(zr)
	copied, version := false, ""
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", oc.Tarball, err)
		}
		switch hdr.Name {
		case openCodeBinary:
			if hdr.Typeflag != tar.TypeReg {
				return fmt.Errorf("%s: %s is not a regular file", oc.Tarball, hdr.Name)
			}
			if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o755, Size: hdr.Size, ModTime: epoch}); err != nil {
				return err
			}
			if _, err := io.Copy(tw, tr); err != nil {
				return err
			}
			copied = true
		case "package/package.json":
			var pkg struct{ Version string }
			if err := json.NewDecoder(tr).Decode(&pkg); err != nil {
				return fmt.Errorf("%s: package.json: %w", oc.Tarball, err)
			}
			version = pkg.Version
		}
	}
	if !copied || version != oc.Version {
		return fmt.Errorf("%s: want %s of version %s, found binary %v, version %q", oc.Tarball, openCodeBinary, oc.Version, copied, version)
	}
	return nil
}
