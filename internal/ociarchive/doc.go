// Package ociarchive writes OCI image archives offline: an OCI image layout
// (oci-layout, index.json, blobs/sha256/...) in one tar, whose index names
// the image with the annotations that containerd's client Import and
// `ctr images import` read (io.containerd.image.name, and
// org.opencontainers.image.ref.name for tools that read only the tag).
//
// Layers are gzip'd tar blobs written to files first (WriteLayer), so that
// images of hundreds of megabytes never sit in memory, then the archive is
// assembled from them (Write, WriteFile). The output is deterministic: the
// same layer contents and config give the same bytes.
//
// It imports no containerd code. Users: deploy/runtime/build (the default
// agent runtime image) and nodeagent/driver/containerd/containerdtest (the
// busybox test image).
package ociarchive
