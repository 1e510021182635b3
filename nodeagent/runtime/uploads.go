package runtime

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
)

// Upload limits from the tenant API reference.
const (
	MaxUploadFileBytes  = 50 << 20
	MaxUploadAgentBytes = 100 << 20
	// UploadsDir is where uploads land, relative to the workspace; the
	// container sees it as /workspace/uploads.
	UploadsDir = "uploads"
)

// AllowedUploadExtensions are the file types the reference accepts.
var AllowedUploadExtensions = map[string]bool{
	// Documents and data.
	".txt": true, ".md": true, ".pdf": true, ".csv": true, ".json": true, ".xml": true,
	".yaml": true, ".yml": true, ".toml": true,
	// Code and config.
	".py": true, ".js": true, ".ts": true, ".jsx": true, ".tsx": true, ".html": true,
	".css": true, ".scss": true, ".sql": true, ".rs": true, ".go": true, ".java": true,
	".c": true, ".cpp": true, ".h": true, ".rb": true, ".php": true, ".swift": true, ".kt": true,
	// Images.
	".png": true, ".jpg": true, ".jpeg": true, ".gif": true, ".webp": true,
}

// Uploaded describes a stored upload as the API returns it.
type Uploaded struct {
	// Path is the file's path inside the container.
	Path string `json:"path"`
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Uploads stores files in agents' workspaces. The workspace belongs to the
// agent, which can plant symlinks in it, so every path is resolved inside the
// workspace (os.Root): an upload can never write outside it, whatever the
// agent made of its uploads directory.
type Uploads struct {
	mu    sync.Mutex
	locks map[string]*sync.Mutex // per workspace: the total is checked, then the file renamed in
}

func (u *Uploads) lock(workspaceDir string) func() {
	u.mu.Lock()
	if u.locks == nil {
		u.locks = map[string]*sync.Mutex{}
	}
	l := u.locks[workspaceDir]
	if l == nil {
		l = new(sync.Mutex)
		u.locks[workspaceDir] = l
	}
	u.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Save stores r as name in workspaceDir/uploads, replacing a file of that
// name. It refuses, with ErrInvalid and nothing written, a name that is not a
// plain file name of an allowed type, a file over 50 MB, and a file that would
// bring the agent's uploads over 100 MB. Files and the uploads directory are
// owned by the workspace's owner, so that the agent can use them.
func (u *Uploads) Save(workspaceDir, name string, r io.Reader) (Uploaded, error) {
	if err := checkUploadName(name); err != nil {
		return Uploaded{}, err
	}
	root, err := os.OpenRoot(workspaceDir)
	if err != nil {
		return Uploaded{}, fmt.Errorf("open workspace: %w", err)
	}
	defer root.Close()
	owner, err := root.Stat(".")
	if err != nil {
		return Uploaded{}, fmt.Errorf("open workspace: %w", err)
	}
	uid, gid := -1, -1
	if st, ok := owner.Sys().(*syscall.Stat_t); ok {
		uid, gid = int(st.Uid), int(st.Gid)
	}
	if _, err := root.Lstat(UploadsDir); errors.Is(err, fs.ErrNotExist) {
		if err := root.Mkdir(UploadsDir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return Uploaded{}, fmt.Errorf("%w: cannot create the uploads directory: %v", ErrInvalid, err)
		}
		if uid >= 0 {
			root.Lchown(UploadsDir, uid, gid)
		}
	}

	// The content streams into a temporary file without holding the
	// agent's lock, so that a slow upload holds up nobody.
	tmp := path.Join(UploadsDir, ".upload-"+randomSuffix())
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return Uploaded{}, fmt.Errorf("%w: the workspace's uploads directory is unusable: %v", ErrInvalid, err)
	}
	n, err := io.Copy(f, io.LimitReader(r, MaxUploadFileBytes+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	fail := func(err error) (Uploaded, error) {
		root.Remove(tmp)
		return Uploaded{}, err
	}
	switch {
	case err != nil:
		return fail(fmt.Errorf("write upload: %w", err))
	case n > MaxUploadFileBytes:
		return fail(fmt.Errorf("%w: %s exceeds 50MB", ErrInvalid, name))
	}
	if uid >= 0 {
		if err := root.Lchown(tmp, uid, gid); err != nil {
			return fail(fmt.Errorf("chown upload: %w", err))
		}
	}

	unlock := u.lock(workspaceDir)
	defer unlock()
	used, err := uploadsSize(root, name)
	if err != nil {
		return fail(err)
	}
	if used+n > MaxUploadAgentBytes {
		return fail(fmt.Errorf("%w: the agent's uploads would exceed 100MB in total (%d bytes stored)", ErrInvalid, used))
	}
	target := path.Join(UploadsDir, name)
	if fi, err := root.Lstat(target); err == nil && fi.IsDir() {
		return fail(fmt.Errorf("%w: %s is a directory in the uploads", ErrInvalid, name))
	}
	if err := root.Rename(tmp, target); err != nil {
		return fail(fmt.Errorf("store upload: %w", err))
	}
	return Uploaded{Path: "/workspace/" + UploadsDir + "/" + name, Name: name, Size: n}, nil
}

// checkUploadName accepts a plain file name with an allowed extension.
func checkUploadName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: missing file name", ErrInvalid)
	case len(name) > 255:
		return fmt.Errorf("%w: file name longer than 255 bytes", ErrInvalid)
	case strings.ContainsAny(name, "/\\\x00"), name == ".", name == "..", strings.HasPrefix(name, "."):
		return fmt.Errorf("%w: %q is not a plain file name", ErrInvalid, name)
	}
	ext := strings.ToLower(path.Ext(name))
	if !AllowedUploadExtensions[ext] {
		return fmt.Errorf("%w: file type %q is not allowed", ErrInvalid, ext)
	}
	return nil
}

// uploadsSize sums the regular files in the uploads directory, except the one
// an upload of replacing would overwrite.
func uploadsSize(root *os.Root, replacing string) (int64, error) {
	entries, err := fs.ReadDir(root.FS(), UploadsDir)
	if err != nil {
		return 0, fmt.Errorf("%w: the workspace's uploads directory is unusable: %v", ErrInvalid, err)
	}
	var total int64
	for _, e := range entries {
		// Other uploads' temporary files are counted when they land.
		if e.Name() == replacing || !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".upload-") {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		total += info.Size()
	}
	return total, nil
}

func randomSuffix() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
