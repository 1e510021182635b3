// Command build builds the default agent runtime image without a registry
// or a Docker engine (`make runtime-image`, or `go run ./deploy/runtime/build`
// from the repository root, as root):
//
//  1. a Debian root filesystem from mmdebstrap (--mode=root, --variant=apt)
//     with the packages in deploy/runtime/packages.txt, from the host's apt
//     sources;
//  2. OpenCode's Linux binary from the npm package opencode-linux-x64 (the
//     optional dependency that carries opencode-ai's native executable), at
//     the version in deploy/runtime/opencode-version, its integrity checked;
//  3. two gzip'd layers: the root filesystem, then OpenCode, the entrypoint
//     (deploy/runtime/entrypoint.sh) and the user agent (uid and gid 1000);
//  4. an OCI image archive named agenthost.local/opencode:latest, the node
//     agent's default runtime image, at build/runtime/opencode-runtime.oci.tar
//     (internal/ociarchive), for `agenthost node --import-image`.
//
// A stamp beside the archive records a SHA-256 key over every input; when it
// matches, the build does nothing. The mmdebstrap output is cached separately
// under its own key, so a new OpenCode version does not rebuild Debian.
//
// deploy/runtime/Dockerfile builds the same image where a registry is
// reachable; both read packages.txt, entrypoint.sh and opencode-version.
package main
