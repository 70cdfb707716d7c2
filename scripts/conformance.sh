#!/usr/bin/env bash
# `make conformance`: the official MCP conformance suite against Cordon serving the fixture
# plugin tests/conformance (built into tests/conformance/dist by `make conformance-plugins`).
#
# 1. Installs Node 22 (npm `node@22`) and `@modelcontextprotocol/conformance` into
#    target/conformance, once (a stamp file per version).
# 2. Starts `cordon serve` on a free loopback port with tests/conformance/cordon.toml.
# 3. Runs `conformance server --suite all` (the stable suite, 2025-11-25 wire) and fails on any
#    failed check. WARNING checks are printed but do not fail the run.
# 4. Runs the 0.2.0 alpha (the 2026-07-28 stateless revision) with `--suite all` against the
#    same server: scored, extension (the tasks extension), pending and draft scenarios alike,
#    and fails on any failed check (docs/conformance.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

SUITE_VERSION=${CONFORMANCE_VERSION:-0.1.16}
ALPHA_VERSION=${CONFORMANCE_ALPHA_VERSION:-0.2.0-alpha.12}
NODE_VERSION=22
dir=target/conformance
cordon=${CORDON:-target/debug/cordon}
log=$dir/cordon.log

install() { # <prefix> <package@version>
    local prefix=$1 package=$2 stamp="$1/.installed-${2//[\/@]/_}"
    [[ -f $stamp ]] && return
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "$package" >/dev/null
    touch "$stamp"
}
install "$dir/node" "node@$NODE_VERSION"
install "$dir/stable" "@modelcontextprotocol/conformance@$SUITE_VERSION"
node_bin=$(cd "$dir/node/node_modules/node/bin" && pwd)
export PATH="$node_bin:$PATH"
node --version | grep -q "^v$NODE_VERSION\." || { echo "conformance: node $NODE_VERSION is not first on PATH" >&2; exit 1; }

[[ -x $cordon ]] || { echo "conformance: $cordon is missing (cargo build -p cordon)" >&2; exit 1; }
[[ -f tests/conformance/dist/everything.wasm ]] || { echo "conformance: run make conformance-plugins first" >&2; exit 1; }

data=$(mktemp -d)
server=
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT

"$cordon" serve --plugins tests/conformance/dist --config tests/conformance/cordon.toml --data "$data" \
    --listen 127.0.0.1:0 --allow-unauthenticated 2>"$log" &
server=$!
url=
for _ in $(seq 1 600); do
    url=$(grep -o 'url=[^ ]*' "$log" | head -n1 | cut -d= -f2 || true)
    [[ -n $url ]] && break
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; echo "conformance: cordon exited" >&2; exit 1; }
    sleep 0.1
done
[[ -n $url ]] || { cat "$log" >&2; echo "conformance: cordon did not start listening" >&2; exit 1; }
echo "conformance: cordon serves the fixtures at $url"

status=0
(cd "$dir/stable" && npx --no-install conformance server --url "$url" --suite all) | tee "$dir/stable.txt" || status=$?
if grep -q 'WARNING' "$dir/stable.txt"; then
    echo "conformance: warnings above (they do not fail the run)"
fi
if [[ $status -ne 0 ]]; then
    echo "conformance: FAILED (conformance exited $status; the server log is $log)" >&2
    exit "$status"
fi

install "$dir/alpha" "@modelcontextprotocol/conformance@$ALPHA_VERSION"
status=0
(cd "$dir/alpha" && npx --no-install conformance server --url "$url" --suite all) \
    | tee "$dir/2026-07-28.txt" || status=$?
if [[ $status -ne 0 ]]; then
    echo "conformance: the 2026-07-28 revision FAILED (conformance exited $status; the server log is $log)" >&2
    exit "$status"
fi
echo "conformance: the suite passes (2025-11-25 and 2026-07-28, each with --suite all)"
