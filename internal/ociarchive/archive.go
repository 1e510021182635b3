package ociarchive

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// AnnotationImageName is the index annotation containerd's Import names the
// image by (images.AnnotationImageName; not imported to stay off containerd).
const AnnotationImageName = "io.containerd.image.name"

// Image is one single-platform image to archive.
type Image struct {
	// Name is the full reference the image is imported as, such as
	// "agenthost.local/opencode:latest".
	Name string
	// Config is the image configuration; Architecture and OS are required.
	// Write fills RootFS from Layers and, when History is empty, adds one
	// history entry per layer.
	Config ocispec.Image
	// Layers are applied in order, the base first.
	Layers []Layer
}

// Validate reports an image that cannot be archived.
func (img Image) Validate() error {
	var errs []error
	if img.Name == "" || strings.Contains(img.Name, "@") {
		errs = append(errs, fmt.Errorf("image name %q must be a reference by name and tag", img.Name))
	}
	if img.Config.Architecture == "" || img.Config.OS == "" {
		errs = append(errs, errors.New("image config needs an architecture and an OS"))
	}
	if len(img.Layers) == 0 {
		errs = append(errs, errors.New("image needs at least one layer"))
	}
	for i, l := range img.Layers {
		if l.Path == "" || l.Digest.Validate() != nil || l.DiffID.Validate() != nil || l.Size <= 0 {
			errs = append(errs, fmt.Errorf("layer %d is not a written layer (use WriteLayer)", i))
		}
	}
	return errors.Join(errs...)
}

// Tag is the tag part of a reference ("latest" when it has none), which
// goes into the org.opencontainers.image.ref.name annotation.
func Tag(name string) string {
	if i := strings.LastIndexAny(name, ":/"); i >= 0 && name[i] == ':' {
		return name[i+1:]
	}
	return "latest"
}

// WriteFile writes the archive to path through a temporary file renamed
// into place, so that path never holds a partial archive. It returns the
// manifest's descriptor.
func WriteFile(path string, img Image) (ocispec.Descriptor, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	buffered := bufio.NewWriterSize(tmp, 1<<20)
	desc, err := Write(buffered, img)
	if err == nil {
		err = buffered.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, os.Rename(tmp.Name(), path)
}

// Write writes the archive to w and returns the manifest's descriptor.
// Each layer file is checked against its digest while it is copied.
func Write(w io.Writer, img Image) (ocispec.Descriptor, error) {
	if err := img.Validate(); err != nil {
		return ocispec.Descriptor{}, err
	}
	cfg := img.Config
	cfg.RootFS = ocispec.RootFS{Type: "layers"}
	generateHistory := len(cfg.History) == 0
	cfg.History = append([]ocispec.History(nil), cfg.History...)
	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
	}
	layerBlobs := map[digest.Digest]Layer{}
	for _, l := range img.Layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		if generateHistory {
			cfg.History = append(cfg.History, ocispec.History{Created: cfg.Created, CreatedBy: l.CreatedBy})
		}
		manifest.Layers = append(manifest.Layers, ocispec.Descriptor{
			MediaType: ocispec.MediaTypeImageLayerGzip, Digest: l.Digest, Size: l.Size,
		})
		layerBlobs[l.Digest] = l
	}

	small := map[digest.Digest][]byte{}
	addJSON := func(mediaType string, v any) (ocispec.Descriptor, error) {
		b, err := json.Marshal(v)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		d := digest.FromBytes(b)
		small[d] = b
		return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}, nil
	}
	var err error
	if manifest.Config, err = addJSON(ocispec.MediaTypeImageConfig, cfg); err != nil {
		return ocispec.Descriptor{}, err
	}
	manifestDesc, err := addJSON(ocispec.MediaTypeImageManifest, manifest)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	manifestDesc.Platform = &ocispec.Platform{Architecture: cfg.Architecture, OS: cfg.OS, Variant: cfg.Variant}
	manifestDesc.Annotations = map[string]string{
		AnnotationImageName:       img.Name,
		ocispec.AnnotationRefName: Tag(img.Name),
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifestDesc},
	})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return ocispec.Descriptor{}, err
	}

	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(entry(dir, tar.TypeDir, 0o755, 0)); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{ocispec.ImageLayoutFile, layout}, {ocispec.ImageIndexFile, index}} {
		if err := writeBytes(tw, f.name, f.b); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	var digests []digest.Digest
	for d := range small {
		digests = append(digests, d)
	}
	for d := range layerBlobs {
		digests = append(digests, d)
	}
	sort.Slice(digests, func(i, j int) bool { return digests[i] < digests[j] })
	for _, d := range digests {
		name := "blobs/sha256/" + d.Encoded()
		if b, ok := small[d]; ok {
			err = writeBytes(tw, name, b)
		} else {
			err = copyLayer(tw, name, layerBlobs[d])
		}
		if err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	return manifestDesc, tw.Close()
}

// epoch is every archive entry's modification time.
var epoch = time.Unix(0, 0)

func entry(name string, typ byte, mode, size int64) *tar.Header {
	return &tar.Header{Name: name, Typeflag: typ, Mode: mode, Size: size, ModTime: epoch}
}

func writeBytes(tw *tar.Writer, name string, b []byte) error {
	if err := tw.WriteHeader(entry(name, tar.TypeReg, 0o644, int64(len(b)))); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

// copyLayer copies a layer file into the archive, failing when the file is
// not the blob its digest names (changed or truncated since WriteLayer).
func copyLayer(tw *tar.Writer, name string, l Layer) error {
	f, err := os.Open(l.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(entry(name, tar.TypeReg, 0o644, l.Size)); err != nil {
		return err
	}
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, sum), io.LimitReader(f, l.Size))
	if err != nil {
		return fmt.Errorf("copy layer %s: %w", l.Path, err)
	}
	if got := digest.NewDigest(digest.SHA256, sum); n != l.Size || got != l.Digest {
		return fmt.Errorf("layer %s is %d bytes with digest %s, want %d bytes with %s", l.Path, n, got, l.Size, l.Digest)
	}
	var extra [1]byte
	if m, _ := f.Read(extra[:]); m != 0 {
		return fmt.Errorf("layer %s is longer than its recorded %d bytes", l.Path, l.Size)
	}
	return nil
}
