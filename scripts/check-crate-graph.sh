#!/bin/sh
# The arrows between Cordon's crates (ARCHITECTURE.md, "Crates"), checked on what cargo resolves:
# a dependency that breaks one fails `make lint`, whichever crate pulled it in.
#   cordon-core     serde, serde_json and tokio's sync primitives only (with the crates they are built from)
#   cordon-state    no wasmtime, no MCP or HTTP server
#   cordon-sandbox  no MCP, no HTTP server framework, no database
#   cordon-host     no MCP (the protocol is the `cordon` crate's), no registry client (`cordon pull` is the CLI's)
set -eu
CARGO=${CARGO:-cargo}

# Every package a crate pulls in for building it (normal dependencies, all targets' features).
deps() {
    $CARGO tree --quiet --locked -p "$1" -e normal --prefix none --format '{p}' |
        awk '{print $1}' | sort -u | grep -vx "$1"
}

status=0
refuse() { # crate, what, matching packages
    if [ -n "$3" ]; then
        echo "crate graph: $1 must not depend on $2, but pulls in: $(echo $3)" >&2
        status=1
    fi
}

core_allowed='cordon-core serde serde_core serde_derive serde_json proc-macro2 quote syn unicode-ident itoa ryu zmij memchr tokio pin-project-lite'
extra=$(deps cordon-core | while read -r name; do
    case " $core_allowed " in *" $name "*) ;; *) echo "$name" ;; esac
done)
refuse cordon-core "anything but serde and tokio (sync)" "$extra"

refuse cordon-state "wasmtime or an MCP/HTTP server" \
    "$(deps cordon-state | grep -E '^(wasmtime|cordon-sandbox|cordon-host|rmcp|axum|hyper)' || true)"

refuse cordon-sandbox "MCP, an HTTP server framework or a database" \
    "$(deps cordon-sandbox | grep -E '^(rmcp|axum|tower-http|cordon-state|cordon-host|rusqlite|tokio-postgres|deadpool)' || true)"

refuse cordon-host "MCP (rmcp) or the cordon crate" "$(deps cordon-host | grep -E '^(rmcp|cordon)$' || true)"

refuse cordon-host "a registry client (oci-client, reqwest)" "$(deps cordon-host | grep -E '^(oci-client|reqwest)$' || true)"

[ "$status" -eq 0 ] && echo "crate graph: core, state, sandbox and host keep their arrows"
exit "$status"
