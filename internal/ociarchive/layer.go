package ociarchive

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
)

// Layer is one compressed layer blob on disk.
type Layer struct {
	// Path is the gzip'd tar file.
	Path string
	// Digest and Size describe the compressed blob as the manifest lists it.
	Digest digest.Digest
	Size   int64
	// DiffID is the digest of the uncompressed tar, as the config lists it.
	DiffID digest.Digest
	// UncompressedSize is the size of the uncompressed tar (for reports).
	UncompressedSize int64
	// CreatedBy describes the layer in the image history.
	CreatedBy string
}

// WriteLayer writes a gzip'd layer to path whose tar is what fill writes,
// and returns it. fill must not close the tar writer. The gzip header
// carries no name or time, so the same entries always give the same blob.
func WriteLayer(path string, fill func(*tar.Writer) error) (layer Layer, err error) {
	f, err := os.Create(path)
	if err != nil {
		return Layer{}, err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	blob := sha256.New()
	compressed := &countingWriter{w: io.MultiWriter(f, blob)}
	buffered := bufio.NewWriterSize(compressed, 1<<20)
	zw, err := gzip.NewWriterLevel(buffered, gzip.DefaultCompression)
	if err != nil {
		return Layer{}, err
	}
	diff := sha256.New()
	uncompressed := &countingWriter{w: io.MultiWriter(zw, diff)}
	tw := tar.NewWriter(uncompressed)
	if err := fill(tw); err != nil {
		return Layer{}, fmt.Errorf("layer %s: %w", path, err)
	}
	if err := errors.Join(tw.Close(), zw.Close(), buffered.Flush()); err != nil {
		return Layer{}, fmt.Errorf("layer %s: %w", path, err)
	}
	return Layer{
		Path:             path,
		Digest:           digest.NewDigest(digest.SHA256, blob),
		Size:             compressed.n,
		DiffID:           digest.NewDigest(digest.SHA256, diff),
		UncompressedSize: uncompressed.n,
	}, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
