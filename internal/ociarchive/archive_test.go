package ociarchive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// testLayer writes a layer holding files (name to content) in order.
func testLayer(t *testing.T, dir, name string, files ...string) Layer {
	t.Helper()
	l, err := WriteLayer(filepath.Join(dir, name), func(tw *tar.Writer) error {
		for i := 0; i+1 < len(files); i += 2 {
			if err := tw.WriteHeader(&tar.Header{Name: files[i], Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[i+1]))}); err != nil {
				return err
			}
			if _, err := tw.Write([]byte(files[i+1])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testImage(t *testing.T, dir string) Image {
	t.Helper()
	base := testLayer(t, dir, "base.tar.gz", "etc/os-release", "ID=test\n", "bin/tool", "#!/bin/sh\n")
	top := testLayer(t, dir, "top.tar.gz", "usr/local/bin/app", strings.Repeat("app", 1000))
	top.CreatedBy = "app"
	return Image{
		Name: "agenthost.local/example:v1",
		Config: ocispec.Image{
			Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
			Config: ocispec.ImageConfig{
				Env:    []string{"PATH=/bin"},
				Labels: map[string]string{"b": "2", "a": "1"},
			},
		},
		Layers: []Layer{base, top},
	}
}

// readArchive returns an archive's files by name.
func readArchive(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			files[h.Name], _ = io.ReadAll(tr)
		}
	}
}

func blob(t *testing.T, files map[string][]byte, d digest.Digest, v any) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+d.Encoded()]
	if !ok {
		t.Fatalf("archive lacks blob %s", d)
	}
	if digest.FromBytes(b) != d {
		t.Fatalf("blob %s has digest %s", d, digest.FromBytes(b))
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestArchiveIsAnOCILayoutNamedForContainerd(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, dir)
	var buf bytes.Buffer
	desc, err := Write(&buf, img)
	if err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, buf.Bytes())
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Fatalf("oci-layout: %s", files["oci-layout"])
	}
	var index ocispec.Index
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != desc.Digest {
		t.Fatalf("index manifests %+v, want the one described by %s", index.Manifests, desc.Digest)
	}
	ann := index.Manifests[0].Annotations
	if ann[AnnotationImageName] != img.Name || ann[ocispec.AnnotationRefName] != "v1" {
		t.Fatalf("index annotations %v", ann)
	}
	var manifest ocispec.Manifest
	blob(t, files, desc.Digest, &manifest)
	var cfg ocispec.Image
	blob(t, files, manifest.Config.Digest, &cfg)
	if len(manifest.Layers) != 2 || len(cfg.RootFS.DiffIDs) != 2 || len(cfg.History) != 2 {
		t.Fatalf("manifest layers %d, config diff ids %d, history %d; want 2 each",
			len(manifest.Layers), len(cfg.RootFS.DiffIDs), len(cfg.History))
	}
	if cfg.History[1].CreatedBy != "app" || cfg.Config.Labels["a"] != "1" {
		t.Fatalf("config lost history or labels: %+v", cfg)
	}
	for i, l := range manifest.Layers {
		if l.MediaType != ocispec.MediaTypeImageLayerGzip {
			t.Fatalf("layer %d media type %s", i, l.MediaType)
		}
		gz := blob(t, files, l.Digest, nil)
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		uncompressed, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if got := digest.FromBytes(uncompressed); got != cfg.RootFS.DiffIDs[i] {
			t.Fatalf("layer %d: uncompressed digest %s, config diff id %s", i, got, cfg.RootFS.DiffIDs[i])
		}
		if int64(len(uncompressed)) != img.Layers[i].UncompressedSize {
			t.Fatalf("layer %d: %d bytes uncompressed, WriteLayer reported %d", i, len(uncompressed), img.Layers[i].UncompressedSize)
		}
	}
}

func TestSameInputsGiveTheSameBytes(t *testing.T) {
	first := t.TempDir()
	second := t.TempDir()
	a, b := filepath.Join(first, "image.tar"), filepath.Join(second, "image.tar")
	descA, err := WriteFile(a, testImage(t, first))
	if err != nil {
		t.Fatal(err)
	}
	descB, err := WriteFile(b, testImage(t, second))
	if err != nil {
		t.Fatal(err)
	}
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if descA.Digest != descB.Digest || !bytes.Equal(ba, bb) {
		t.Fatalf("two archives of the same image differ (manifests %s and %s)", descA.Digest, descB.Digest)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(first, "image.tar.tmp*")); len(leftovers) != 0 {
		t.Fatalf("WriteFile left temporary files: %v", leftovers)
	}
}

func TestWriteRefusesALayerChangedSinceItWasWritten(t *testing.T) {
	dir := t.TempDir()
	img := testImage(t, dir)
	other := testLayer(t, dir, "other.tar.gz", "x", "y")
	if err := os.Rename(other.Path, img.Layers[1].Path); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(io.Discard, img); err == nil {
		t.Fatal("archived a layer file that is not the blob its digest names")
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	valid := testImage(t, dir)
	tests := []struct {
		name   string
		change func(*Image)
	}{
		{"no name", func(img *Image) { img.Name = "" }},
		{"digest reference", func(img *Image) { img.Name = "example@sha256:" + strings.Repeat("0", 64) }},
		{"no architecture", func(img *Image) { img.Config.Architecture = "" }},
		{"no layers", func(img *Image) { img.Layers = nil }},
		{"unwritten layer", func(img *Image) { img.Layers = []Layer{{Path: "x"}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := valid
			tt.change(&img)
			if err := img.Validate(); err == nil {
				t.Fatalf("%s: Validate accepted %+v", tt.name, img)
			}
		})
	}
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid image: %v", err)
	}
}

func TestTag(t *testing.T) {
	for name, want := range map[string]string{
		"agenthost.local/opencode:latest": "latest",
		"agenthost.local/test:1":          "1",
		"localhost:5000/app":              "latest",
		"localhost:5000/app:v2":           "v2",
		"busybox":                         "latest",
	} {
		if got := Tag(name); got != want {
			t.Errorf("Tag(%q) = %q, want %q", name, got, want)
		}
	}
}
