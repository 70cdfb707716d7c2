#!/usr/bin/env bash
# Copies the guest components built by `make plugins` to where they are served and tested from:
# the members of plugins/Cargo.toml go to plugins/dist/, those of tests/plugins/Cargo.toml to
# tests/plugins/dist/. Reading the workspaces' member lists keeps this script in step with them.
#
# Usage: scripts/collect-plugins.sh <dir holding the built .wasm files>
set -euo pipefail

built=${1:?usage: $0 <dir holding the built .wasm files, e.g. target/guests/wasm32-wasip2/release>}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The quoted entries of a workspace manifest's `members = [...]`, which may span lines.
members() {
    sed -n '/^members[[:space:]]*=/,/]/p' "$1" | grep -o '"[^"]*"' | tr -d '"'
}

# A member's package name: the first `name = "..."`, which is in [package].
package_name() {
    sed -n 's/^name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$1" | head -n 1
}

collect() {
    local workspace=$1 dest=$2 member name wasm count=0
    mkdir -p "$dest"
    for member in $(members "$workspace/Cargo.toml"); do
        name=$(package_name "$workspace/$member/Cargo.toml")
        # cargo names a cdylib after its package, with `-` turned into `_`.
        wasm="$built/${name//-/_}.wasm"
        if [[ ! -f $wasm ]]; then
            echo "collect-plugins: $wasm is missing; build $workspace/Cargo.toml first" >&2
            exit 1
        fi
        # Served under the package's own name: rust-weather.wasm → plugin `rust-weather`.
        cp -f "$wasm" "$dest/$name.wasm"
        count=$((count + 1))
    done
    echo "collect-plugins: $count component(s) in ${dest#"$root"/}"
}

collect "$root/plugins" "$root/plugins/dist"
collect "$root/tests/plugins" "$root/tests/plugins/dist"
