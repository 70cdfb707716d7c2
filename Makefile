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

.PHONY: run test plugins toolchain build lint fmt clean

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

build:
	$(CARGO) build -p cordon-host

# A debug host is fine for trying Cordon (wasm is compiled by an optimized Cranelift either way);
# `make run PROFILE=release` for the release build.
PROFILE ?= dev
run: plugins
	$(CARGO) run --profile $(PROFILE) -p cordon-host --bin cordon -- serve --plugins plugins/dist --allow-unauthenticated

test: plugins build $(PYVENV)/.installed
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
