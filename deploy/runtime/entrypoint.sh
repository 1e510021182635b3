#!/bin/sh
# agenthost-entrypoint: the default agent runtime's entrypoint, installed at
# /usr/local/bin/agenthost-entrypoint by `make runtime-image` and by the
# Dockerfile. It runs as the image's user agent (uid 1000) and serves the
# OpenCode server API on AGENTHOST_RUNTIME_PORT (4096 unless set), on every
# address of the container's own network namespace.
#
# /workspace is the agent's persistent workspace (a bind mount from the node);
# uploads land in /workspace/uploads and OpenCode's session database in
# /workspace/.agenthost (OPENCODE_DB and XDG_DATA_HOME in the image config).
#
# tini is PID 1 so that orphaned processes left by the agent's commands are
# reaped and SIGTERM reaches OpenCode (-g: its whole process group), which as
# PID 1 itself would neither reap nor be killed by an unhandled signal.
set -eu
mkdir -p /workspace/uploads /workspace/.agenthost
cd /workspace
exec tini -g -- opencode serve --hostname 0.0.0.0 --port "${AGENTHOST_RUNTIME_PORT:-4096}"
