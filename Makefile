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

# Plugins in C and Zig: plugins/c-*/app.c and plugins/zig-*/app.zig on the C helper plugins/c-sdk,
# built as WASI preview-1 core modules → plugins/dist/ (the host wraps them into components at
# load). C needs clang, lld and wasi-libc (Debian: installed with apt-get when missing and we are
# root or have sudo; otherwise skipped with a message); Zig comes from PyPI (ziglang) into a venv.
CC_WASM      ?= clang
ZIG_VERSION  := 0.17.1
ZIG_PYVENV   := $(LANG_DIR)/zigvenv
ZIG_STAMP    := $(ZIG_PYVENV)/.ziglang-$(ZIG_VERSION)
ZIG          := ZIG_GLOBAL_CACHE_DIR=$(CURDIR)/$(LANG_DIR)/zig-cache $(ZIG_PYVENV)/bin/python -m ziglang
C_SDK        := plugins/c-sdk/cordon.h plugins/c-sdk/cordon.c
C_PLUGINS    := $(patsubst plugins/%/app.c,plugins/dist/%.wasm,$(wildcard plugins/c-*/app.c))
ZIG_PLUGINS  := $(patsubst plugins/%/app.zig,plugins/dist/%.wasm,$(wildcard plugins/zig-*/app.zig))
WASI_CFLAGS  := --target=wasm32-wasi -O2 -mexec-model=reactor -Wall -Wextra -Wl,--strip-debug

# Plugins in Go (plugins/go-*/ on plugins/go-sdk, Go from PyPI): their rules and why, in plugins/go.mk.
include plugins/go.mk

.PHONY: run test postgres registry deb deb-check bench soak conformance conformance-plugins plugins lang-plugins c-plugins zig-plugins toolchain build lint fmt clean fuzz fuzz-smoke

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

lang-plugins: $(PY_PLUGINS) $(JS_PLUGINS) c-plugins zig-plugins go-plugins
	@:

# clang with wasi-libc present? Else install it (apt-get, as root or with sudo), else skip.
c-plugins:
	@if ! printf 'int main(void){return 0;}' | $(CC_WASM) --target=wasm32-wasi -x c - -o /dev/null 2>/dev/null; then \
		if command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null; }; then \
			SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
			echo "make: installing clang, lld and wasi-libc for the C plugins"; \
			$$SUDO apt-get install -y --no-install-recommends clang lld wasi-libc libclang-rt-dev-wasm32 >/dev/null \
				|| { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y --no-install-recommends clang lld wasi-libc libclang-rt-dev-wasm32 >/dev/null; }; \
		else \
			echo "make: skipping the C plugins ($(C_PLUGINS)): they need clang, lld and wasi-libc (Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32)" >&2; \
			exit 0; \
		fi; \
	fi; \
	$(MAKE) --no-print-directory $(C_PLUGINS)

zig-plugins: $(ZIG_PLUGINS)
	@:

$(ZIG_STAMP):
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { echo "make: the Zig plugins need $(PYTHON) with venv and ensurepip (or make plugins LANG_PLUGINS=0)" >&2; exit 1; }
	rm -rf $(ZIG_PYVENV)
	$(PYTHON) -m venv $(ZIG_PYVENV)
	$(ZIG_PYVENV)/bin/pip install --quiet --disable-pip-version-check ziglang==$(ZIG_VERSION)
	touch $@

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

$(C_PLUGINS): plugins/dist/%.wasm: $$(wildcard plugins/%/*.c plugins/%/*.h) $(C_SDK)
	@mkdir -p $(LANG_DIR)/build plugins/dist
	$(CC_WASM) $(WASI_CFLAGS) -Iplugins/c-sdk $(filter %.c,$^) -o $(LANG_DIR)/build/$*.wasm
	mv -f $(LANG_DIR)/build/$*.wasm $@

$(ZIG_PLUGINS): plugins/dist/%.wasm: $$(wildcard plugins/%/*.zig) $(C_SDK) plugins/c-sdk/cordon.zig $(ZIG_STAMP)
	@mkdir -p $(LANG_DIR)/build plugins/dist
	$(ZIG) build-exe -target wasm32-wasi -O ReleaseSmall -fno-entry -mexec-model=reactor -lc \
		-femit-bin=$(LANG_DIR)/build/$*.wasm --dep cordon -I plugins/c-sdk plugins/c-sdk/cordon.c \
		-Mroot=plugins/$*/app.zig -Mcordon=plugins/c-sdk/cordon.zig
	mv -f $(LANG_DIR)/build/$*.wasm $@

build:
	$(CARGO) build -p cordon -p cordon-bench

# A debug host is fine for trying Cordon (wasm is compiled by an optimized Cranelift either way);
# `make run PROFILE=release` for the release build.
PROFILE ?= dev
run: plugins
	$(CARGO) run --profile $(PROFILE) -p cordon --bin cordon -- serve --plugins plugins/dist --allow-unauthenticated

test: plugins conformance-plugins build postgres registry $(PYVENV)/.installed
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON) plugins/python-sdk/test_cordon.py
	$(CARGO) test --workspace
	# The idempotency and task suites again, against PostgreSQL instead of SQLite (tests/e2e/common/postgres.rs).
	CORDON_E2E_STORE=postgres $(CARGO) test -p cordon-e2e --test idempotency --test tasks
	$(PYVENV)/bin/python tests/python/official_client.py target/debug/cordon plugins/dist
	@$(MAKE) --no-print-directory conformance
	@$(MAKE) --no-print-directory deb-check
	# The benchmark harness runs end to end with tiny counts (it measures nothing here).
	target/debug/cordon-bench run --smoke --cordon target/debug/cordon --plugin plugins/dist/demo.wasm --out target/bench-smoke.json

# A PostgreSQL server for the replica tests (tests/e2e/replicas.rs start their own, in a temporary
# directory, on loopback): installed from Debian's packages when missing. Nothing is started here.
postgres:
	@if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1; then :; else \
		echo "installing PostgreSQL from Debian's packages"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; \
	fi

# An OCI registry for the distribution tests (tests/e2e/oci.rs start their own, in a temporary
# directory, on loopback): Debian's docker-registry (the CNCF distribution server), installed when
# missing. Nothing is started here.
registry:
	@if [ -x /usr/bin/docker-registry ] || [ -n "$$CORDON_REGISTRY_BIN" ]; then :; else \
		echo "installing docker-registry from Debian's packages"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends docker-registry; \
	fi

# The Debian package (scripts/build-deb.sh: dpkg-deb alone, no debhelper): the release binary, the
# hardened unit, a default /etc/cordon/cordon.toml and the `cordon` user → target/deb/*.deb.
# `sudo dpkg -i target/deb/cordon_*.deb`, then see /etc/cordon/cordon.toml.
deb:
	$(CARGO) build --release --locked -p cordon
	scripts/build-deb.sh target/release/cordon target/deb

# What `make test` checks of the package without a second build: the debug binary packaged the
# same way, unpacked into a throwaway root, its layout and unit checked (systemd-analyze verify).
deb-check: build
	scripts/check-deb.sh "$$(scripts/build-deb.sh target/debug/cordon target/deb-check gzip)"

# Benchmarks (release build): one table, and bench/results.json. See BENCHMARKS.md.
bench: plugins
	$(CARGO) build --release -p cordon -p cordon-bench
	target/release/cordon-bench run --cordon target/release/cordon --plugin plugins/dist/demo.wasm --out bench/results.json

# Soak (release build, not in CI): SOAK_SECONDS of good calls, hot reloads and hostile calls
# against `cordon serve` on loopback; fails if a call is lost or answered wrong, or if RSS or open
# file descriptors grow past their bounds. Writes target/soak.json. See BENCHMARKS.md (## Soak).
SOAK_SECONDS ?= 300
soak: plugins
	$(CARGO) build --release -p cordon -p cordon-bench
	target/release/cordon-bench soak --seconds $(SOAK_SECONDS) --cordon target/release/cordon \
		--demo plugins/dist/demo.wasm --hostile tests/plugins/dist/hostile.wasm --out target/soak.json

# The official MCP conformance suite (npm @modelcontextprotocol/conformance, on Node 22 from npm)
# against Cordon serving the fixture plugin tests/conformance: the stable suite (2025-11-25,
# --suite all) and the 0.2.0 alpha for the 2026-07-28 revision; fails on any failed check.
conformance: conformance-plugins build
	scripts/conformance.sh

conformance-plugins: toolchain
	$(CARGO) build --release --target $(GUEST_TARGET) --target-dir $(GUEST_DIR) --manifest-path tests/conformance/Cargo.toml
	@mkdir -p tests/conformance/dist
	cp -f $(GUEST_DIR)/$(GUEST_TARGET)/release/everything.wasm tests/conformance/dist/

# The official Python MCP client, for the interoperability test.
$(PYVENV)/.installed: tests/python/requirements.txt
	$(PYTHON) -m venv $(PYVENV)
	$(PYVENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

# Fuzzing (fuzz/README.md): cargo-fuzz, installed on first use, on the nightly toolchain when one
# is installed, else on the default (stable) one with RUSTC_BOOTSTRAP=1, which lets it take the
# unstable flags cargo-fuzz passes (verified with rustc 1.95: same build, same runs). Builds
# every target once, then runs each for FUZZ_SECONDS on its seed corpus (fuzz/corpus/<target>,
# never written: new inputs go to fuzz/target/corpus/<target>); any finding fails, its input
# saved under fuzz/artifacts/<target>/. `make fuzz FUZZ_SECONDS=600` for a longer session.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := config token arguments jsonrpc
# --dev: fuzz/Cargo.toml's dev profile (opt-level 1, overflow checks); -s none: no ASan. Why: fuzz/README.md.
FUZZ_BUILD   := --dev -s none
FUZZ_CARGO    = $(if $(shell rustup toolchain list 2>/dev/null | grep '^nightly'),$(CARGO) +nightly,RUSTC_BOOTSTRAP=1 $(CARGO))
fuzz:
	@cargo-fuzz --version 2>/dev/null | grep -qx 'cargo-fuzz $(CARGO_FUZZ_VERSION)' \
		|| $(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked
	$(FUZZ_CARGO) fuzz build $(FUZZ_BUILD)
	@rm -rf fuzz/target/scratch
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/target/corpus/$$target; \
		echo "make: fuzzing $$target for $(FUZZ_SECONDS) s"; \
		$(FUZZ_CARGO) fuzz run $(FUZZ_BUILD) $$target fuzz/target/corpus/$$target fuzz/corpus/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=60 -print_final_stats=1 || exit 1; \
	done

# The bounded fuzz run CI does (.ci/run): every target for FUZZ_SMOKE_SECONDS, built at opt-level 0
# (cranelift stays at 3): a clean build in about 4.5 minutes on two cores instead of 15, at a
# fifth of the executions per second. Same targets, seeds, invariants and failure rule as `make fuzz`.
FUZZ_SMOKE_SECONDS ?= 15
fuzz-smoke:
	env CARGO_PROFILE_DEV_OPT_LEVEL=0 $(MAKE) fuzz FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	CARGO="$(CARGO)" scripts/check-crate-graph.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf plugins/dist tests/plugins/dist tests/conformance/dist
