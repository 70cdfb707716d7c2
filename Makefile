# Cordon: `make run` serves the example plugins; `make test` runs every test.
# Both install what they need (the wasm32-wasip2 target) and build the plugins first.

CARGO        ?= cargo
GUEST_TARGET := wasm32-wasip2
GUEST_DIR    := target/guests
# Guest crates: <workspace manifest> → where their .wasm files go.
PLUGINS_MANIFEST := plugins/Cargo.toml
FIXTURES_MANIFEST := tests/plugins/Cargo.toml

PYTHON       ?= python3
PYVENV       := target/pyvenv

# Plugins in other languages: plugins/python-*/app.py and plugins/js-*/app.js, built with
# toolchains installed from PyPI and npm into target/lang (once: stamp files) → plugins/dist/.
# `make plugins LANG_PLUGINS=0` builds only the Rust plugins.
LANG_PLUGINS ?= 1
NPM          ?= npm
LANG_DIR     := target/lang
COMPONENTIZE_PY_VERSION := 0.25.1
COMPONENTIZE_JS_VERSION := 0.23.0
LANG_PYVENV  := $(LANG_DIR)/pyvenv
LANG_NODE    := $(LANG_DIR)/node
PY_STAMP     := $(LANG_PYVENV)/.componentize-py-$(COMPONENTIZE_PY_VERSION)
JS_STAMP     := $(LANG_NODE)/.componentize-js-$(COMPONENTIZE_JS_VERSION)
# Python guests use the world with wasi:http named in it (plugins/wit); JavaScript guests the
# plain contract: componentize-js links wasi:http for `fetch` itself.
GUEST_WIT    := wit/plugin.wit $(wildcard plugins/wit/*.wit plugins/wit/deps/*.wit)
PY_PLUGINS   := $(patsubst plugins/%/app.py,plugins/dist/%.wasm,$(wildcard plugins/python-*/app.py))
JS_PLUGINS   := $(patsubst plugins/%/app.js,plugins/dist/%.wasm,$(wildcard plugins/js-*/app.js))

.PHONY: run test plugins lang-plugins toolchain build lint fmt clean

toolchain:
	@rustup target list --installed 2>/dev/null | grep -qx $(GUEST_TARGET) || rustup target add $(GUEST_TARGET)
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

plugins: toolchain
	$(CARGO) build --release --target $(GUEST_TARGET) --target-dir $(GUEST_DIR) --manifest-path $(PLUGINS_MANIFEST)
	$(CARGO) build --release --target $(GUEST_TARGET) --target-dir $(GUEST_DIR) --manifest-path $(FIXTURES_MANIFEST)
	@scripts/collect-plugins.sh $(GUEST_DIR)/$(GUEST_TARGET)/release
	# The demo as a preview-1 core module: the fixture for `cordon wrap` and auto-wrapping.
	$(CARGO) build --release --target wasm32-wasip1 --target-dir $(GUEST_DIR) --manifest-path $(PLUGINS_MANIFEST) -p demo
	cp -f $(GUEST_DIR)/wasm32-wasip1/release/demo.wasm tests/plugins/dist/demo_core.wasm
ifneq ($(LANG_PLUGINS),0)
	@$(MAKE) --no-print-directory lang-plugins
endif

lang-plugins: $(PY_PLUGINS) $(JS_PLUGINS)
	@:

$(PY_STAMP):
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { echo "make: the Python plugins need $(PYTHON) with venv and ensurepip (or make plugins LANG_PLUGINS=0)" >&2; exit 1; }
	rm -rf $(LANG_PYVENV)
	$(PYTHON) -m venv $(LANG_PYVENV)
	$(LANG_PYVENV)/bin/pip install --quiet --disable-pip-version-check componentize-py==$(COMPONENTIZE_PY_VERSION)
	touch $@

$(JS_STAMP):
	@command -v $(NPM) >/dev/null || { echo "make: the JavaScript plugins need $(NPM) (or make plugins LANG_PLUGINS=0)" >&2; exit 1; }
	rm -rf $(LANG_NODE)
	mkdir -p $(LANG_NODE)
	$(NPM) install --prefix $(LANG_NODE) --no-audit --no-fund --loglevel=error @bytecodealliance/componentize-js@$(COMPONENTIZE_JS_VERSION)
	touch $@

# Each component is written next to the toolchain, then renamed into plugins/dist/ (a watching
# server never sees half a file).
.SECONDEXPANSION:
$(PY_PLUGINS): plugins/dist/%.wasm: $$(wildcard plugins/%/*.py) plugins/python-sdk/cordon.py $(GUEST_WIT) $(PY_STAMP)
	@mkdir -p $(LANG_DIR)/build plugins/dist
	PYTHONDONTWRITEBYTECODE=1 $(LANG_PYVENV)/bin/componentize-py -d plugins/wit -w plugin-http componentize \
		-p plugins/$* -p plugins/python-sdk -o $(LANG_DIR)/build/$*.wasm app
	mv -f $(LANG_DIR)/build/$*.wasm $@

$(JS_PLUGINS): plugins/dist/%.wasm: $$(wildcard plugins/%/*.js) plugins/js-sdk/cordon.js wit/plugin.wit $(JS_STAMP)
	@mkdir -p $(LANG_DIR)/build plugins/dist
	$(LANG_NODE)/node_modules/.bin/componentize-js plugins/$*/app.js --wit wit -n plugin -d fetch-event \
		-o $(LANG_DIR)/build/$*.wasm
	mv -f $(LANG_DIR)/build/$*.wasm $@

build:
	$(CARGO) build -p cordon-host

# A debug host is fine for trying Cordon (wasm is compiled by an optimized Cranelift either way);
# `make run PROFILE=release` for the release build.
PROFILE ?= dev
run: plugins
	$(CARGO) run --profile $(PROFILE) -p cordon-host --bin cordon -- serve --plugins plugins/dist --allow-unauthenticated

test: plugins build $(PYVENV)/.installed
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON) plugins/python-sdk/test_cordon.py
	$(CARGO) test --workspace
	$(PYVENV)/bin/python tests/python/official_client.py target/debug/cordon plugins/dist

# The official Python MCP client, for the interoperability test.
$(PYVENV)/.installed: tests/python/requirements.txt
	$(PYTHON) -m venv $(PYVENV)
	$(PYVENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf plugins/dist tests/plugins/dist
