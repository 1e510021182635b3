package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// tarEntry is one entry for writeTar.
type tarEntry struct {
	hdr     tar.Header
	content string
}

func writeTar(t *testing.T, path string, gz bool, entries ...tarEntry) {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		hdr := e.hdr
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(e.content))
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.content))
	}
	tw.Close()
	if zw != nil {
		zw.Close()
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func dirEntry(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}

func fileEntry(name, content string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}, content: content}
}

// fakeRootfs writes a root filesystem tarball shaped like mmdebstrap's.
func fakeRootfs(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "rootfs.tar")
	shadow := tarEntry{hdr: tar.Header{Name: "./etc/shadow", Typeflag: tar.TypeReg, Mode: 0o640, Gid: 42, Gname: "shadow"}, content: "root:*::0:99999:7:::\n"}
	writeTar(t, path, false,
		dirEntry("./"), dirEntry("./dev/"),
		tarEntry{hdr: tar.Header{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
		dirEntry("./etc/"), dirEntry("./etc/skel/"), dirEntry("./home/"), dirEntry("./usr/"), dirEntry("./usr/local/"), dirEntry("./usr/local/bin/"),
		fileEntry("./etc/passwd", "root:x:0:0:root:/root:/bin/bash\n", 0o644),
		fileEntry("./etc/group", "root:x:0:\n", 0o644),
		shadow,
		fileEntry("./etc/gshadow", "root:*::\n", 0o640),
		fileEntry("./etc/skel/.bashrc", "# bashrc\n", 0o644),
	)
	return path
}

// fakeOpenCode writes an npm tarball shaped like opencode-linux-x64's.
func fakeOpenCode(t *testing.T, dir, version string) openCode {
	t.Helper()
	path := filepath.Join(dir, "opencode.tgz")
	writeTar(t, path, true,
		fileEntry("package/bin/opencode", "#!/bin/sh\necho "+version+"\n", 0o755),
		fileEntry("package/package.json", `{"name":"opencode-linux-x64","version":"`+version+`"}`, 0o644),
	)
	b, _ := os.ReadFile(path)
	sum := sha512.Sum512(b)
	return openCode{Tarball: path, Version: version, Integrity: "sha512-" + base64.StdEncoding.EncodeToString(sum[:])}
}

// layerEntries returns a gzip'd layer's entries by name, with contents.
func layerEntries(t *testing.T, path string) (map[string]tarEntry, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]tarEntry{}
	var order []string
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return entries, order
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		entries[hdr.Name] = tarEntry{hdr: *hdr, content: string(b)}
		order = append(order, hdr.Name)
	}
}

func TestAgentLayerAddsOpenCodeEntrypointAndUser(t *testing.T) {
	dir := t.TempDir()
	rootfs := fakeRootfs(t, dir)
	oc := fakeOpenCode(t, dir, "9.9.9")
	layer, err := writeAgentLayer(filepath.Join(dir, "agent.tar.gz"), rootfs, oc, []byte("#!/bin/sh\nexec opencode serve\n"))
	if err != nil {
		t.Fatal(err)
	}
	entries, order := layerEntries(t, layer.Path)
	check := func(name string, mode int64, uid int, content string) {
		t.Helper()
		e, ok := entries[name]
		if !ok {
			t.Fatalf("layer lacks %s; has %v", name, order)
		}
		if e.hdr.Mode&0o7777 != mode || e.hdr.Uid != uid || (content != "" && !strings.Contains(e.content, content)) {
			t.Errorf("%s: mode %o uid %d content %q; want mode %o uid %d containing %q", name, e.hdr.Mode, e.hdr.Uid, e.content, mode, uid, content)
		}
		if e.hdr.ModTime.After(epoch) {
			t.Errorf("%s: time %s after the epoch", name, e.hdr.ModTime)
		}
	}
	check(openCodePath, 0o755, 0, "echo 9.9.9")
	check(entrypointPath, 0o755, 0, "exec opencode serve")
	check("etc/passwd", 0o644, 0, "root:x:0:0:root:/root:/bin/bash\nagent:x:1000:1000:agenthost agent:/home/agent:/bin/bash\n")
	check("etc/group", 0o644, 0, "agent:x:1000:\n")
	check("etc/shadow", 0o640, 0, "agent:!:")
	check("etc/gshadow", 0o640, 0, "agent:!::")
	check("home/agent/", 0o755, 1000, "")
	check("home/agent/.bashrc", 0o644, 1000, "# bashrc")
	check("workspace/", 0o755, 1000, "")
	check("etc/agenthost/", 0o755, 0, "")
	check("etc/hosts", 0o644, 0, "127.0.0.1	localhost\n")
	if entries["etc/shadow"].hdr.Gid != 42 {
		t.Errorf("/etc/shadow lost its group: %+v", entries["etc/shadow"].hdr)
	}
	// Parents come before their children, so that no directory is made
	// implicitly with other permissions.
	for i, name := range order {
		parent := filepath.Dir(strings.TrimSuffix(name, "/")) + "/"
		if parent != "./" && !slices.Contains(order[:i], parent) {
			t.Errorf("%s comes before its parent %s", name, parent)
		}
	}
}

func TestAgentLayerRefusesAWrongOpenCodePackage(t *testing.T) {
	dir := t.TempDir()
	oc := fakeOpenCode(t, dir, "1.0.0")
	oc.Version = "2.0.0" // the tarball's package.json says 1.0.0
	if _, err := writeAgentLayer(filepath.Join(dir, "agent.tar.gz"), fakeRootfs(t, dir), oc, nil); err == nil {
		t.Fatal("built the agent layer from an OpenCode package of another version")
	}
	if _, err := os.Stat(filepath.Join(dir, "agent.tar.gz")); !os.IsNotExist(err) {
		t.Fatalf("a failed layer was left behind: %v", err)
	}
}

func TestCheckIntegrity(t *testing.T) {
	dir := t.TempDir()
	oc := fakeOpenCode(t, dir, "1.0.0")
	if err := checkIntegrity(oc.Tarball, oc.Integrity); err != nil {
		t.Fatal(err)
	}
	if err := checkIntegrity(oc.Tarball, "sha512-"+base64.StdEncoding.EncodeToString(make([]byte, 64))); err == nil {
		t.Fatal("accepted a tarball whose integrity differs")
	}
}

func TestRootfsLayerDropsDevicesAndClampsTimes(t *testing.T) {
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs.tar")
	late := time.Unix(sourceDateEpoch+3600, 0)
	writeTar(t, rootfs, false,
		dirEntry("./"), dirEntry("./dev/"),
		tarEntry{hdr: tar.Header{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666}},
		tarEntry{hdr: tar.Header{Name: "./dev/fd", Typeflag: tar.TypeSymlink, Linkname: "/proc/self/fd"}},
		dirEntry("./usr/"), dirEntry("./usr/bin/"),
		tarEntry{hdr: tar.Header{Name: "./usr/bin/perl", Typeflag: tar.TypeReg, Mode: 0o755, ModTime: late,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "x", "atime": "1"}}, content: "perl"},
		tarEntry{hdr: tar.Header{Name: "./usr/bin/perl5.36.0", Typeflag: tar.TypeLink, Linkname: "./usr/bin/perl"}},
	)
	layer, err := writeRootfsLayer(filepath.Join(dir, "rootfs.tar.gz"), rootfs)
	if err != nil {
		t.Fatal(err)
	}
	entries, order := layerEntries(t, layer.Path)
	want := []string{"dev/", "usr/", "usr/bin/", "usr/bin/perl", "usr/bin/perl5.36.0"}
	if !slices.Equal(order, want) {
		t.Fatalf("layer entries %v, want %v", order, want)
	}
	perl := entries["usr/bin/perl"].hdr
	if !perl.ModTime.Equal(epoch) || perl.PAXRecords["SCHILY.xattr.security.capability"] != "x" {
		t.Fatalf("perl: time %s (want %s), PAX records %v (want the xattr kept)", perl.ModTime, epoch, perl.PAXRecords)
	}
	if link := entries["usr/bin/perl5.36.0"].hdr.Linkname; link != "usr/bin/perl" {
		t.Fatalf("hard link to %q, want usr/bin/perl", link)
	}
	again, err := writeRootfsLayer(filepath.Join(dir, "again.tar.gz"), rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != layer.Digest || again.DiffID != layer.DiffID {
		t.Fatalf("the same root filesystem gave layers %s and %s", layer.Digest, again.Digest)
	}
}

func TestAddUserRefusesExistingNameOrID(t *testing.T) {
	base := map[string][]byte{
		"etc/passwd":  []byte("root:x:0:0:root:/root:/bin/bash\n"),
		"etc/group":   []byte("root:x:0:\n"),
		"etc/shadow":  []byte("root:*::0:99999:7:::\n"),
		"etc/gshadow": []byte("root:*::\n"),
	}
	tests := []struct {
		name, file, line string
	}{
		{"user name taken", "etc/passwd", "agent:x:2000:2000::/home/agent:/bin/sh"},
		{"uid taken", "etc/passwd", "someone:x:1000:1000::/home/someone:/bin/sh"},
		{"gid taken", "etc/group", "staff2:x:1000:"},
		{"group name taken", "etc/group", "agent:x:2000:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string][]byte{}
			for k, v := range base {
				files[k] = v
			}
			files[tt.file] = append(bytes.Clone(files[tt.file]), tt.line+"\n"...)
			if _, err := addUser(files); err == nil {
				t.Fatalf("added the user to a root filesystem whose %s has %q", tt.file, tt.line)
			}
		})
	}
	if _, err := addUser(base); err != nil {
		t.Fatal(err)
	}
}

func TestReadPackages(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "packages.txt")
	os.WriteFile(path, []byte("# comment\nbash\n\n  git  # version control\n"), 0o644)
	got, err := readPackages(path)
	if err != nil || !slices.Equal(got, []string{"bash", "git"}) {
		t.Fatalf("readPackages = %v, %v", got, err)
	}
	os.WriteFile(path, []byte("bash git\n"), 0o644)
	if _, err := readPackages(path); err == nil {
		t.Fatal("accepted two packages on one line")
	}
	// The real list holds what the brief of the image promises.
	got, err = readPackages("../packages.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bash", "git", "curl", "ca-certificates", "ripgrep", "tini"} {
		if !slices.Contains(got, p) {
			t.Errorf("packages.txt lacks %s", p)
		}
	}
}

// testConfig is the repository's config with its own sources file.
func testConfig(t *testing.T) Config {
	t.Helper()
	wd, _ := os.Getwd()
	root, err := findRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig(root)
	cfg.SourcesFile = filepath.Join(t.TempDir(), "debian.sources")
	os.WriteFile(cfg.SourcesFile, []byte("Types: deb\nURIs: http://deb.debian.org/debian\n"), 0o644)
	cfg.Out = io.Discard
	return cfg
}

func TestKeyChangesWithEveryInput(t *testing.T) {
	base := testConfig(t)
	key := func(cfg Config) string {
		t.Helper()
		k, err := cfg.Key()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	want := key(base)
	if again := key(base); again != want {
		t.Fatalf("the same inputs gave keys %s and %s", want, again)
	}
	changes := map[string]func(*Config){
		"OpenCode version": func(c *Config) { c.OpenCodeVersion = "0.0.1" },
		"suite":            func(c *Config) { c.Suite = "trixie" },
		"sources content": func(c *Config) {
			os.WriteFile(c.SourcesFile, []byte("Types: deb\nURIs: http://mirror.example/debian\n"), 0o644)
		},
	}
	for name, change := range changes {
		cfg := base
		cfg.SourcesFile = filepath.Join(t.TempDir(), "debian.sources")
		os.WriteFile(cfg.SourcesFile, []byte("Types: deb\nURIs: http://deb.debian.org/debian\n"), 0o644)
		change(&cfg)
		if key(cfg) == want {
			t.Errorf("changing the %s left the key unchanged", name)
		}
	}

	// A copy of the inputs and sources with one byte changed in each file.
	root := t.TempDir()
	for _, dir := range append([]string{base.InputDir}, sourceDirs...) {
		files, _ := filepath.Glob(filepath.Join(base.Root, dir, "*"))
		os.MkdirAll(filepath.Join(root, dir), 0o755)
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil {
				os.WriteFile(filepath.Join(root, dir, filepath.Base(f)), b, 0o644)
			}
		}
	}
	copied := base
	copied.Root = root
	if key(copied) != want {
		t.Fatal("a copy of the same inputs gave another key")
	}
	for _, f := range []string{"deploy/runtime/packages.txt", "deploy/runtime/entrypoint.sh", "deploy/runtime/build/rootfs.go", "internal/ociarchive/archive.go"} {
		path := filepath.Join(root, f)
		b, _ := os.ReadFile(path)
		os.WriteFile(path, append(b, '\n'), 0o644)
		if key(copied) == want {
			t.Errorf("changing %s left the key unchanged", f)
		}
		os.WriteFile(path, b, 0o644)
	}
	test := filepath.Join(root, "deploy/runtime/build/build_test.go")
	os.WriteFile(test, []byte("package main\n"), 0o644)
	if key(copied) != want {
		t.Error("a test file changed the key; tests are not inputs")
	}
}

func TestImageConfig(t *testing.T) {
	cfg := imageConfig("1.2.3")
	c := cfg.Config
	if c.User != "1000:1000" || c.WorkingDir != "/workspace" || !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/agenthost-entrypoint"}) {
		t.Fatalf("user %q, working dir %q, entrypoint %q", c.User, c.WorkingDir, c.Entrypoint)
	}
	if _, ok := c.ExposedPorts["4096/tcp"]; !ok || c.Labels[LabelOpenCodeVersion] != "1.2.3" {
		t.Fatalf("ports %v, labels %v", c.ExposedPorts, c.Labels)
	}
	for _, want := range []string{"HOME=/home/agent", "OPENCODE_DB=/workspace/.agenthost/opencode.db", "OPENCODE_DISABLE_AUTOUPDATE=1", "OPENCODE_CONFIG=/etc/agenthost/opencode.json"} {
		if !slices.Contains(c.Env, want) {
			t.Errorf("env lacks %s: %v", want, c.Env)
		}
	}
}

// TestDockerfileMatchesTheBuild keeps deploy/runtime/Dockerfile, which CI
// cannot build, in step with the image this program builds.
func TestDockerfileMatchesTheBuild(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// Instructions with their continuation lines joined, comments dropped.
	var instructions []string
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		if s := strings.TrimSpace(cur.String()); s != "" {
			instructions = append(instructions, s)
		}
		cur.Reset()
	}
	final := map[string][]string{}
	for _, in := range instructions {
		word, rest, _ := strings.Cut(in, " ")
		if word == "FROM" {
			final = map[string][]string{} // only the last stage is the image
		}
		final[word] = append(final[word], strings.TrimSpace(rest))
	}
	cfg := imageConfig("v").Config
	env := strings.Fields(strings.Join(final["ENV"], " "))
	if !slices.Equal(slices.Sorted(slices.Values(env)), slices.Sorted(slices.Values(cfg.Env))) {
		t.Errorf("Dockerfile ENV %v, the build's %v", env, cfg.Env)
	}
	var entrypoint []string
	if len(final["ENTRYPOINT"]) != 1 || json.Unmarshal([]byte(final["ENTRYPOINT"][0]), &entrypoint) != nil || !slices.Equal(entrypoint, cfg.Entrypoint) {
		t.Errorf("Dockerfile ENTRYPOINT %v, the build's %v", final["ENTRYPOINT"], cfg.Entrypoint)
	}
	for word, want := range map[string]string{"USER": cfg.User, "WORKDIR": cfg.WorkingDir, "EXPOSE": "4096/tcp", "STOPSIGNAL": cfg.StopSignal} {
		if !slices.Equal(final[word], []string{want}) {
			t.Errorf("Dockerfile %s %v, the build's %s", word, final[word], want)
		}
	}
	if !regexp.MustCompile(`^debian:bookworm`).MatchString(strings.Join(final["FROM"], "")) {
		t.Errorf("the Dockerfile's image is FROM %v, not Debian bookworm", final["FROM"])
	}
	copies := strings.Join(final["COPY"], "\n")
	for _, want := range []string{"deploy/runtime/packages.txt", "deploy/runtime/entrypoint.sh " + "/" + entrypointPath, "/" + openCodePath} {
		if !strings.Contains(copies, want) {
			t.Errorf("the Dockerfile does not COPY %s:\n%s", want, copies)
		}
	}
}
