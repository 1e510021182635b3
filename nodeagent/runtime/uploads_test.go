package runtime

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func workspace(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "workspace")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// zeros is an n-byte reader that allocates nothing.
func zeros(n int64) io.Reader { return io.LimitReader(zeroReader{}, n) }

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	list, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range list {
		names = append(names, e.Name())
	}
	return names
}

func TestUploadStoresAllowedFiles(t *testing.T) {
	ws := workspace(t)
	var u Uploads
	got, err := u.Save(ws, "data.csv", strings.NewReader("a,b\n1,2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got != (Uploaded{Path: "/workspace/uploads/data.csv", Name: "data.csv", Size: 8}) {
		t.Fatalf("uploaded = %+v", got)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "uploads", "data.csv")); string(b) != "a,b\n1,2\n" {
		t.Fatalf("stored %q", b)
	}
	// Same name again replaces the file; upper-case extensions count.
	if _, err := u.Save(ws, "data.csv", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Save(ws, "Photo.PNG", bytes.NewReader([]byte{0x89, 'P', 'N', 'G'})); err != nil {
		t.Fatal(err)
	}
	if names := entries(t, filepath.Join(ws, "uploads")); len(names) != 2 {
		t.Fatalf("uploads dir = %v", names)
	}
}

func TestUploadRefusals(t *testing.T) {
	for _, name := range []string{"", ".", "..", "../x.txt", "a/b.txt", `a\b.txt`, ".hidden.txt", "run.sh", "binary", "x.exe", "noext.", "a\x00.txt", strings.Repeat("a", 252) + ".txt"} {
		ws := workspace(t)
		var u Uploads
		if _, err := u.Save(ws, name, strings.NewReader("x")); !errors.Is(err, ErrInvalid) {
			t.Errorf("name %q: %v, want ErrInvalid", name, err)
		}
		if _, err := os.Stat(filepath.Join(ws, "uploads")); err == nil && len(entries(t, filepath.Join(ws, "uploads"))) != 0 {
			t.Errorf("name %q left files behind", name)
		}
	}
}

func TestUploadLimits(t *testing.T) {
	ws := workspace(t)
	var u Uploads
	if _, err := u.Save(ws, "big.txt", zeros(MaxUploadFileBytes+1)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "50MB") {
		t.Fatalf("51 MB file: %v", err)
	}
	if names := entries(t, filepath.Join(ws, "uploads")); len(names) != 0 {
		t.Fatalf("a refused upload left %v", names)
	}
	if _, err := u.Save(ws, "one.txt", zeros(MaxUploadFileBytes)); err != nil {
		t.Fatalf("exactly 50 MB: %v", err)
	}
	if _, err := u.Save(ws, "two.txt", zeros(MaxUploadFileBytes-10)); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Save(ws, "three.txt", zeros(11)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "100MB") {
		t.Fatalf("over 100 MB in total: %v", err)
	}
	// Replacing a file counts its new size, not both.
	if _, err := u.Save(ws, "two.txt", zeros(MaxUploadFileBytes)); err != nil {
		t.Fatalf("replacing within the total: %v", err)
	}
	if names := entries(t, filepath.Join(ws, "uploads")); len(names) != 2 {
		t.Fatalf("uploads dir = %v", names)
	}
}

// TestUploadStaysInsideTheWorkspace: the agent owns its workspace and can
// point uploads/ anywhere with a symlink; the node agent must not follow it.
func TestUploadStaysInsideTheWorkspace(t *testing.T) {
	ws := workspace(t)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(ws, "uploads")); err != nil {
		t.Fatal(err)
	}
	var u Uploads
	if _, err := u.Save(ws, "x.txt", strings.NewReader("escape")); err == nil {
		t.Fatal("an upload followed a symlink out of the workspace")
	}
	if names := entries(t, outside); len(names) != 0 {
		t.Fatalf("files written outside the workspace: %v", names)
	}

	ws2 := workspace(t)
	if err := os.Mkdir(filepath.Join(ws2, "uploads"), 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(outside, "victim.txt")
	if err := os.Symlink(target, filepath.Join(ws2, "uploads", "data.txt")); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Save(ws2, "data.txt", strings.NewReader("new")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatal("an upload wrote through a symlink planted in uploads/")
	}
	if fi, err := os.Lstat(filepath.Join(ws2, "uploads", "data.txt")); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("uploads/data.txt is not a regular file: %v %v", fi, err)
	}
}

func TestUploadOverADirectoryIsRefused(t *testing.T) {
	ws := workspace(t)
	if err := os.MkdirAll(filepath.Join(ws, "uploads", "x.txt"), 0o755); err != nil {
		t.Fatal(err)
	}
	var u Uploads
	if _, err := u.Save(ws, "x.txt", strings.NewReader("x")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("upload over a directory: %v, want ErrInvalid", err)
	}
	if names := entries(t, filepath.Join(ws, "uploads")); len(names) != 1 {
		t.Fatalf("left behind: %v", names)
	}
}
