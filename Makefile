# agenthost build entry points. Run `make setup` once on a fresh Debian 12 machine (as
# root), then `make test`. Every target works non-interactively (CI=true, no stdin).
# `make runtime-image` builds the default agent runtime (Debian + OpenCode) offline into
# build/runtime/opencode-runtime.oci.tar, for `agenthost node --import-image` (as root).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
MAKEFLAGS += --no-builtin-rules

GO ?= go

# Debian packages that the targets below need and a fresh Debian 12 machine may lack.
# prometheus (with promtool) is for the tests of deploy/: they start their own, and
# apt-packages keeps its package from starting or enabling a service of its own. chromium
# runs headless in the web dashboard's browser tests (test/e2e).
APT_PACKAGES := git ca-certificates procps iproute2 containerd runc containernetworking-plugins nftables iptables busybox-static mmdebstrap prometheus chromium
# npm installs OpenCode (setup, runtime-image); any npm will do, so Debian's is added only
# when none is on the PATH.
APT_PACKAGES += $(if $(shell command -v npm),,nodejs npm)

# Debian packages only make bench needs: wrk drives the proxy benchmark, nginx is its peer.
BENCH_APT_PACKAGES := wrk nginx-light

# Global npm packages, each pinned as name@version (scoped names work: @scope/name@1.2.3).
NPM_PACKAGES :=

# Tools, pinned. protoc-gen-go and protoc-gen-connect-go match the runtime modules in
# go.mod; bump them together and run `make proto`.
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION := v1.21.1

# OpenCode, the default agent runtime: its version lives in deploy/runtime/opencode-version
# alone (the image build, its test and the Dockerfile read it there); bump it there.
OPENCODE_VERSION := $(strip $(file < deploy/runtime/opencode-version))

BIN := $(CURDIR)/.bin
STAMPS := $(BIN)/.stamps
BUF := $(BIN)/buf

# Generated files in proto/; everything else there is hand-written.
GENERATED_FIND := find proto -type f \( -name '*.pb.go' -o -name '*.connect.go' \)

.PHONY: setup apt-packages npm-packages tools opencode runtime-image proto check-proto lint build test test-faults bench dev clean containerd-up

# setup: install missing Debian and npm packages, then the tools and OpenCode. A no-op when
# all are present.
setup: apt-packages npm-packages tools opencode

# apt-packages: apt-get install the APT_PACKAGES that dpkg does not report as installed.
apt-packages:
	@missing=(); \
	for pkg in $(APT_PACKAGES); do \
		status="$$(dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null || true)"; \
		if [[ "$$status" != "install ok installed" ]]; then missing+=("$$pkg"); fi; \
	done; \
	if (( $${#missing[@]} > 0 )); then \
		if (( EUID != 0 )); then \
			echo "setup: missing Debian packages: $${missing[*]}; run make setup as root" >&2; \
			exit 1; \
		fi; \
		echo "setup: installing $${missing[*]}"; \
		export DEBIAN_FRONTEND=noninteractive; \
		policy=/usr/sbin/policy-rc.d; \
		if [[ ! -e "$$policy" ]]; then \
			trap 'rm -f "$$policy"' EXIT; \
			printf '%s\n' '#!/bin/sh' '# make setup: Debian'"'"'s prometheus service is not started (the tests run their own).' \
				'for a; do case "$$a" in prometheus|prometheus.service) exit 101;; esac; done' 'exit 0' > "$$policy"; \
			chmod 755 "$$policy"; \
		fi; \
		apt-get update && apt-get install -y --no-install-recommends "$${missing[@]}"; \
		if [[ " $${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then \
			systemctl disable --now prometheus >/dev/null 2>&1 || true; \
		fi; \
	fi

# npm-packages: npm install -g each NPM_PACKAGES entry whose pinned version is not installed.
npm-packages:
	@specs=($(NPM_PACKAGES)); \
	if (( $${#specs[@]} == 0 )); then exit 0; fi; \
	if ! command -v npm >/dev/null; then \
		echo "setup: npm is needed for $${specs[*]}; add nodejs and npm to APT_PACKAGES" >&2; \
		exit 1; \
	fi; \
	root="$$(npm root -g)"; \
	for spec in "$${specs[@]}"; do \
		name="$${spec%@*}"; want="$${spec##*@}"; \
		have="$$(node -p "require(process.argv[1]).version" "$$root/$$name/package.json" 2>/dev/null || true)"; \
		if [[ "$$have" != "$$want" ]]; then \
			echo "setup: installing $$spec"; \
			npm install -g --no-fund --no-audit "$$spec"; \
		fi; \
	done

# opencode: install the pinned OpenCode for tests into .bin/opencode-$(OPENCODE_VERSION) when
# missing, and point .bin/opencode at its native binary (a standalone executable).
OPENCODE_DIR := $(BIN)/opencode-$(OPENCODE_VERSION)
OPENCODE_NATIVE := opencode-$(OPENCODE_VERSION)/node_modules/opencode-linux-x64/bin/opencode
opencode: apt-packages
	@if [[ ! -x "$(BIN)/$(OPENCODE_NATIVE)" ]]; then \
		if ! command -v npm >/dev/null; then \
			echo "setup: npm is needed for opencode-ai@$(OPENCODE_VERSION); add nodejs and npm to APT_PACKAGES" >&2; \
			exit 1; \
		fi; \
		echo "setup: installing opencode-ai@$(OPENCODE_VERSION) into $(OPENCODE_DIR)"; \
		npm install --prefix "$(OPENCODE_DIR)" --no-fund --no-audit "opencode-ai@$(OPENCODE_VERSION)"; \
		if [[ ! -x "$(BIN)/$(OPENCODE_NATIVE)" ]]; then \
			echo "setup: npm did not install $(BIN)/$(OPENCODE_NATIVE) (not linux-x64?)" >&2; \
			exit 1; \
		fi; \
	fi; \
	if [[ "$$(readlink "$(BIN)/opencode" 2>/dev/null)" != "$(OPENCODE_NATIVE)" ]]; then \
		ln -sfn "$(OPENCODE_NATIVE)" "$(BIN)/opencode"; \
	fi

# tools: install buf, protoc-gen-go and protoc-gen-connect-go at their pinned versions into .bin/.
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-connect-go

# Each tool is reinstalled when its binary is missing or its version stamp changes. A
# stamp is named for the version, so changing a pin above makes a new, newer stamp.
# tool-rule: binary name, package, version.
define tool-rule
$(BIN)/$(1): $(STAMPS)/$(1)@$(3) | apt-packages
	@echo "tools: installing $(2)@$(3)"
	@GOBIN="$(BIN)" $(GO) install "$(2)@$(3)"
	@touch "$$@"

$(STAMPS)/$(1)@$(3):
	@mkdir -p "$(STAMPS)"
	@rm -f "$(STAMPS)/$(1)@"*
	@touch "$$@"
endef
$(eval $(call tool-rule,buf,github.com/bufbuild/buf/cmd/buf,$(BUF_VERSION)))
$(eval $(call tool-rule,protoc-gen-go,google.golang.org/protobuf/cmd/protoc-gen-go,$(PROTOC_GEN_GO_VERSION)))
$(eval $(call tool-rule,protoc-gen-connect-go,connectrpc.com/connect/cmd/protoc-gen-connect-go,$(PROTOC_GEN_CONNECT_GO_VERSION)))

# proto: regenerate the Go code in proto/ from the .proto files, dropping stale output.
proto: tools
	@$(GENERATED_FIND) -delete
	PATH="$(BIN):$$PATH" $(BUF) generate

# check-proto: fail when the generated code in proto/ is not exactly what `make proto`
# writes (differing, missing or extra files). Generates into a temporary directory, so
# the work tree is never touched.
check-proto: tools
	@export LC_ALL=C; tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	PATH="$(BIN):$$PATH" $(BUF) generate --output "$$tmp/gen"; \
	$(GENERATED_FIND) | sort > "$$tmp/have"; \
	(cd "$$tmp/gen" && $(GENERATED_FIND) | sort) > "$$tmp/want"; \
	problems=(); \
	while read -r f; do problems+=("missing: $$f"); done < <(comm -13 "$$tmp/have" "$$tmp/want"); \
	while read -r f; do problems+=("extra:   $$f"); done < <(comm -23 "$$tmp/have" "$$tmp/want"); \
	while read -r f; do \
		if ! cmp -s "$$f" "$$tmp/gen/$$f"; then \
			problems+=("differs: $$f"); \
			diff -u --label "$$f (committed)" --label "$$f (generated)" "$$f" "$$tmp/gen/$$f" >&2 || true; \
		fi; \
	done < <(comm -12 "$$tmp/have" "$$tmp/want"); \
	if (( $${#problems[@]} > 0 )); then \
		echo "check-proto: generated code in proto/ is out of date; run 'make proto' and commit the result:" >&2; \
		printf '  %s\n' "$${problems[@]}" >&2; \
		exit 1; \
	fi; \
	echo "check-proto: generated code is up to date"

# lint: gofmt, go vet, buf lint and check-proto.
lint: tools check-proto
	@unformatted="$$(find . \( -path ./.bin -o -path ./bin -o -path ./build -o -path ./.cache -o -path ./.git -o -path ./data \) -prune \
		-o -type f -name '*.go' -print0 | xargs -0 -r gofmt -l)"; \
	if [[ -n "$$unformatted" ]]; then \
		echo "lint: these files need gofmt -w:" >&2; echo "$$unformatted" >&2; exit 1; \
	fi
	$(GO) vet ./...
	$(BUF) lint

# build: build the agenthost binary into bin/.
build:
	$(GO) build -o bin/agenthost ./cmd/agenthost

# test: set up, lint, then run every test with the race detector.
# The runtime image is built (or found cached) before the tests start, so that its
# cold build (mmdebstrap, compression: minutes of both cores) does not run beside
# timing-sensitive tests; the tests that need it then find it in build/runtime.
test: setup lint runtime-image
	$(GO) test -race -count=1 -timeout 15m ./...

# test-faults: the long versions of the multi-process fault scenarios in test/cluster
# (several leader kills under load, whole-cluster restarts by SIGTERM and kill -9) and of
# the load test in test/load (10,000 creates instead of 1,000); `make test` runs their
# short versions.
test-faults:
	$(GO) test -count=1 -timeout 30m -v ./test/cluster -args -faults
	AGENTHOST_LOAD_CREATES=10000 $(GO) test -count=1 -timeout 10m -v ./test/load

# bench: store and placement throughput beside raw raft.Apply on a 3-server loopback
# cluster; scheduler decisions per second on one core (5,000 nodes, 50,000 agents);
# create-to-healthy through the node agent beside `ctr run` on a private containerd
# (root), with the node agent's memory; container start to a healthy OpenCode from the
# runtime image beside `ctr run` of it; first-token latency through the OpenCode adapter
# beside OpenCode's own API; create-to-ready through the REST API beside the node-agent-only
# path (root), and GET agent / list agents on a 3-server cluster beside direct HTTP; the edge
# proxy with wrk beside direct and nginx, and its route lookup's allocations.
bench: setup
	@$(MAKE) --no-print-directory apt-packages APT_PACKAGES="$(BENCH_APT_PACKAGES)"
	$(GO) run ./test/bench/store
	$(GO) run ./test/bench/scheduler
	$(GO) run ./test/bench/nodeagent
	$(GO) run ./test/bench/runtime
	$(GO) test -run '^$$' -bench FirstToken -benchtime=30x ./nodeagent/runtime/opencode/
	$(GO) test -run '^$$' -bench CreateToReady -benchtime=1x -timeout 30m ./test/bench/api/
	$(GO) test -run '^$$' -bench Reads -benchtime=3s ./test/bench/api/
	$(GO) run ./test/bench/proxy
	$(GO) test -run '^$$' -bench 'Match|RouteLookup' -benchmem ./proxy/

# runtime-image: build the default agent runtime image (Debian bookworm from mmdebstrap,
# the packages in deploy/runtime/packages.txt, OpenCode $(OPENCODE_VERSION) from npm) into
# build/runtime/opencode-runtime.oci.tar, named agenthost.local/opencode:latest. Does nothing
# when the stamp beside it says no input changed. Root only (mmdebstrap --mode=root).
runtime-image: setup
	$(GO) run ./deploy/runtime/build

# containerd-up: start containerd when it does not answer (no systemd here,
# or the service is stopped). The tests start private containerd daemons instead.
containerd-up: apt-packages
	@if ! ctr --timeout 2s version >/dev/null 2>&1; then \
		echo "containerd-up: starting containerd (log: /var/log/agenthost-containerd.log)"; \
		mkdir -p /run/containerd; \
		rm -f /run/containerd/containerd.sock /run/containerd/containerd.sock.ttrpc; \
		nohup containerd >>/var/log/agenthost-containerd.log 2>&1 & \
		for i in $$(seq 100); do ctr --timeout 1s version >/dev/null 2>&1 && break; sleep 0.1; done; \
		ctr --timeout 2s version >/dev/null 2>&1 || { echo "containerd-up: containerd did not start" >&2; exit 1; }; \
	fi

# dev: build and run the control node and a node agent in one process (agenthost dev).
dev: setup build containerd-up runtime-image
	./bin/agenthost dev

# clean: remove the binary in bin/ and the tools in .bin/.
clean:
	rm -rf bin "$(BIN)"
