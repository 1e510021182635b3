package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// sourceDirs hold the Go code whose output the archive is: this program and
// the archive writer. Tests are not inputs.
var sourceDirs = []string{"deploy/runtime/build", "internal/ociarchive"}

// Stamp records what the archive was built from and what it holds. It is
// written after the archive, so a stamp always describes a whole archive.
type Stamp struct {
	// Key is the SHA-256 over every input (Config.Key).
	Key             string       `json:"key"`
	Image           string       `json:"image"`
	OpenCodeVersion string       `json:"opencode_version"`
	Suite           string       `json:"suite"`
	ArchiveSize     int64        `json:"archive_size"`
	Manifest        string       `json:"manifest"`
	Layers          []StampLayer `json:"layers"`
}

// StampLayer describes one layer of the archive.
type StampLayer struct {
	Digest           string `json:"digest"`
	Size             int64  `json:"size"`
	UncompressedSize int64  `json:"uncompressed_size"`
	CreatedBy        string `json:"created_by"`
}

// Key returns the SHA-256 (hex) over every input of the build: the package
// list, the entrypoint, the build program's and the archive writer's source,
// the OpenCode version, the Debian suite, the apt sources file's path and
// content, the image name and the Go version (compression output may change
// with it). Inputs are framed by name and length, so no two input sets
// share a key by concatenation.
func (c Config) Key() (string, error) {
	c, err := c.resolve()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	add := func(name string, content []byte) {
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(content))
		h.Write(content)
	}
	for _, f := range []string{"packages.txt", "entrypoint.sh"} {
		b, err := os.ReadFile(filepath.Join(c.path(c.InputDir), f))
		if err != nil {
			return "", err
		}
		add(f, b)
	}
	for _, dir := range sourceDirs {
		files, err := filepath.Glob(filepath.Join(c.path(dir), "*.go"))
		if err != nil {
			return "", err
		}
		sort.Strings(files)
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return "", err
			}
			add(filepath.Join(dir, filepath.Base(f)), b)
		}
	}
	sources, err := os.ReadFile(c.SourcesFile)
	if err != nil {
		return "", fmt.Errorf("read apt sources: %w", err)
	}
	add("sources:"+c.SourcesFile, sources)
	add("opencode-version", []byte(c.OpenCodeVersion))
	add("suite", []byte(c.Suite))
	add("image", []byte(ImageName))
	add("go", []byte(runtime.Version()))
	return hex.EncodeToString(h.Sum(nil)), nil
}

// current returns the stamp when it matches key and the archive it
// describes is present with its recorded size.
func (c Config) current(key string) (Stamp, bool) {
	b, err := os.ReadFile(c.StampPath())
	if err != nil {
		return Stamp{}, false
	}
	var s Stamp
	if json.Unmarshal(b, &s) != nil || s.Key != key {
		return Stamp{}, false
	}
	info, err := os.Stat(c.ArchivePath())
	if err != nil || info.Size() != s.ArchiveSize {
		return Stamp{}, false
	}
	return s, true
}

// UpToDate reports whether the archive matches the current inputs, so that
// Build would do nothing.
func (c Config) UpToDate() (bool, error) {
	key, err := c.Key()
	if err != nil {
		return false, err
	}
	c, err = c.resolve()
	if err != nil {
		return false, err
	}
	_, ok := c.current(key)
	return ok, nil
}

func (c Config) writeStamp(s Stamp) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := c.StampPath() + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.StampPath())
}
