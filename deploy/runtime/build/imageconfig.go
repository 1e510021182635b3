package main

import (
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// RuntimePort is where OpenCode's server listens in the container, unless
// AGENTHOST_RUNTIME_PORT says otherwise (entrypoint.sh).
const RuntimePort = 4096

// imageEnv is the image's environment; deploy/runtime/Dockerfile sets the
// same. OpenCode's session database and data go to the persistent
// workspace; its config is the file the node agent writes into the
// read-only /etc/agenthost mount; nothing is fetched or updated at start.
var imageEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/" + userHome,
	"LANG=C.UTF-8",
	"OPENCODE_CONFIG=/" + configDirPath + "/opencode.json",
	"OPENCODE_DISABLE_AUTOUPDATE=1",
	"OPENCODE_DISABLE_MODELS_FETCH=1",
	"OPENCODE_DISABLE_LSP_DOWNLOAD=1",
	"OPENCODE_DISABLE_DEFAULT_PLUGINS=1",
	"OPENCODE_DISABLE_SHARE=1",
	"OPENCODE_DB=/workspace/.agenthost/opencode.db",
	"XDG_DATA_HOME=/workspace/.agenthost/data",
}

// Labels on the image.
const (
	LabelOpenCodeVersion = "dev.agenthost.opencode.version"
	labelVersion         = "org.opencontainers.image.version"
	labelTitle           = "org.opencontainers.image.title"
)

// imageConfig is the runtime image's configuration for OpenCode version.
func imageConfig(version string) ocispec.Image {
	created := epoch
	return ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		Config: ocispec.ImageConfig{
			User:         fmt.Sprintf("%d:%d", userID, userID),
			ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", RuntimePort): {}},
			Env:          imageEnv,
			Entrypoint:   []string{"/" + entrypointPath},
			WorkingDir:   "/" + workspacePath,
			StopSignal:   "SIGTERM",
			Labels: map[string]string{
				labelTitle:           "agenthost OpenCode runtime",
				labelVersion:         version,
				LabelOpenCodeVersion: version,
			},
		},
	}
}
