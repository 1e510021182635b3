package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/agenthost/agenthost/internal/ociarchive"
)

// The user the runtime runs as.
const (
	userName = "agent"
	userID   = 1000
	userHome = "home/agent"
)

// Paths in the image (without the leading slash, as in layers).
const (
	openCodePath   = "usr/local/bin/opencode"
	entrypointPath = "usr/local/bin/agenthost-entrypoint"
	workspacePath  = "workspace"
	configDirPath  = "etc/agenthost"
)

// hosts is the image's /etc/hosts. containerd, unlike Docker, writes none
// into a container, and without one neither localhost nor the container's
// own hostname resolves: every lookup goes to DNS and waits for its
// timeouts (curl, through libldap, resolves the hostname at start and took
// 10 s). The containerd driver names every agent container's host "agent".
const hosts = `127.0.0.1	localhost
127.0.1.1	agent
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
`

// accountFiles are edited to add the user, with the line each gets.
var accountFiles = map[string]string{
	"etc/passwd":  fmt.Sprintf("%s:x:%d:%d:agenthost agent:/%s:/bin/bash", userName, userID, userID, userHome),
	"etc/group":   fmt.Sprintf("%s:x:%d:", userName, userID),
	"etc/shadow":  userName + ":!::0:99999:7:::",
	"etc/gshadow": userName + ":!::",
}

// parentDirs are directories of the base layer that the agent layer writes
// into; their entries are repeated unchanged so that the layer alters no
// directory's owner or mode.
var parentDirs = []string{"etc/", "home/", "usr/", "usr/local/", "usr/local/bin/"}

// baseFile is one entry of the base layer and its content.
type baseFile struct {
	hdr     tar.Header
	content []byte
}

// scanBase reads the entries of the mmdebstrap tarball that the agent layer
// derives from: the account files, /etc/skel and the parent directories.
func scanBase(rootfs string) (map[string]baseFile, error) {
	f, err := os.Open(rootfs)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	want := map[string]bool{}
	for name := range accountFiles {
		want[name] = true
	}
	for _, d := range parentDirs {
		want[d] = true
	}
	found := map[string]baseFile{}
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", rootfs, err)
		}
		if !normalize(hdr) {
			continue
		}
		skel := strings.HasPrefix(hdr.Name, "etc/skel/") && hdr.Typeflag == tar.TypeReg
		if !want[hdr.Name] && !skel {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		found[hdr.Name] = baseFile{hdr: *hdr, content: b}
	}
	for name := range want {
		if _, ok := found[name]; !ok {
			return nil, fmt.Errorf("the root filesystem lacks /%s", name)
		}
	}
	return found, nil
}

// addUser returns the account files with the user appended, refusing a
// root filesystem that already has the name or the id.
func addUser(files map[string][]byte) (map[string][]byte, error) {
	out := map[string][]byte{}
	for name, line := range accountFiles {
		content, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("no /%s", name)
		}
		for _, existing := range strings.Split(string(content), "\n") {
			fields := strings.Split(existing, ":")
			if fields[0] == userName {
				return nil, fmt.Errorf("/%s already has %s", name, userName)
			}
			// passwd: name:x:uid:gid; group: name:x:gid.
			idField := map[string]int{"etc/passwd": 2, "etc/group": 2}[name]
			if idField > 0 && len(fields) > idField && fields[idField] == fmt.Sprint(userID) {
				return nil, fmt.Errorf("/%s already has id %d: %q", name, userID, existing)
			}
		}
		b := bytes.Clone(content)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			b = append(b, '\n')
		}
		out[name] = append(b, line+"\n"...)
	}
	return out, nil
}

// writeAgentLayer writes the layer above the root filesystem: OpenCode, the
// entrypoint, the user agent with its home from /etc/skel, /etc/hosts, and
// the mount points /workspace and /etc/agenthost.
func writeAgentLayer(path, rootfs string, oc openCode, entrypoint []byte) (ociarchive.Layer, error) {
	base, err := scanBase(rootfs)
	if err != nil {
		return ociarchive.Layer{}, err
	}
	contents := map[string][]byte{}
	for name := range accountFiles {
		contents[name] = base[name].content
	}
	accounts, err := addUser(contents)
	if err != nil {
		return ociarchive.Layer{}, err
	}
	var skel []string
	for name := range base {
		if strings.HasPrefix(name, "etc/skel/") {
			skel = append(skel, name)
		}
	}
	sort.Strings(skel)

	return ociarchive.WriteLayer(path, func(tw *tar.Writer) error {
		dir := func(name string, mode int64, id int) error {
			return tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode, Uid: id, Gid: id, ModTime: epoch})
		}
		file := func(hdr tar.Header, content []byte) error {
			hdr.Size = int64(len(content))
			if err := tw.WriteHeader(&hdr); err != nil {
				return err
			}
			_, err := tw.Write(content)
			return err
		}
		same := func(name string) error {
			hdr := base[name].hdr
			return tw.WriteHeader(&hdr)
		}
		if err := same("etc/"); err != nil {
			return err
		}
		if err := dir(configDirPath+"/", 0o755, 0); err != nil {
			return err
		}
		for _, name := range []string{"etc/group", "etc/gshadow"} {
			if err := file(base[name].hdr, accounts[name]); err != nil {
				return err
			}
		}
		if err := file(tar.Header{Name: "etc/hosts", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: epoch}, []byte(hosts)); err != nil {
			return err
		}
		for _, name := range []string{"etc/passwd", "etc/shadow"} {
			if err := file(base[name].hdr, accounts[name]); err != nil {
				return err
			}
		}
		if err := same("home/"); err != nil {
			return err
		}
		if err := dir(userHome+"/", 0o755, userID); err != nil {
			return err
		}
		for _, name := range skel {
			hdr := base[name].hdr
			hdr.Name = userHome + "/" + strings.TrimPrefix(name, "etc/skel/")
			hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = userID, userID, "", ""
			if err := file(hdr, base[name].content); err != nil {
				return err
			}
		}
		for _, name := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
			if err := same(name); err != nil {
				return err
			}
		}
		if err := file(tar.Header{Name: entrypointPath, Typeflag: tar.TypeReg, Mode: 0o755, ModTime: epoch}, entrypoint); err != nil {
			return err
		}
		if err := oc.copyBinary(tw, openCodePath); err != nil {
			return err
		}
		return dir(workspacePath+"/", 0o755, userID)
	})
}
