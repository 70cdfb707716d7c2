#!/bin/sh
# Builds the Debian package of Cordon from a built binary, with dpkg-deb alone (no debhelper):
#   scripts/build-deb.sh BINARY OUT_DIR [COMPRESSION]  → prints OUT_DIR/cordon_VERSION_ARCH.deb
# COMPRESSION is dpkg-deb's -Z (xz by default; the check uses gzip, which is much faster).
# It holds /usr/bin/cordon, the hardened unit (deploy/cordon.service, pointed at /usr/bin),
# a default /etc/cordon/cordon.toml (a conffile), the docs, and maintainer scripts that create
# the `cordon` system user and the plugins folder (deploy/debian/). `make deb` builds the release
# binary and calls this; `make deb-check` packages the debug binary and checks the result.
set -eu
binary=$1
out=$2
compression=${3:-xz}
root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)
arch=$(dpkg --print-architecture)
# The newest glibc symbol version the binary needs is the libc6 it depends on.
glibc=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$binary" "$stage/usr/bin/cordon"
strip --strip-debug "$stage/usr/bin/cordon"
install -d "$stage/lib/systemd/system"
sed -e 's|/usr/local/bin/cordon|/usr/bin/cordon|' -e 's|/usr/local/share/doc/cordon|/usr/share/doc/cordon|' \
    "$root/deploy/cordon.service" > "$stage/lib/systemd/system/cordon.service"
chmod 0644 "$stage/lib/systemd/system/cordon.service"
install -D -m 0640 "$root/deploy/debian/cordon.toml" "$stage/etc/cordon/cordon.toml"
install -d "$stage/usr/share/doc/cordon"
for doc in README.md SECURITY.md docs/config.md docs/distribution.md; do
    install -m 0644 "$root/$doc" "$stage/usr/share/doc/cordon/"
done
install -m 0644 "$root/deploy/README.md" "$stage/usr/share/doc/cordon/service.md"
printf 'Cordon\nLicense: Apache-2.0\n' > "$stage/usr/share/doc/cordon/copyright"

install -d "$stage/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "$root/deploy/debian/$script" "$stage/DEBIAN/$script"
done
echo /etc/cordon/cordon.toml > "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: cordon
Version: $version
Architecture: $arch
Maintainer: Cordon developers <cordon@localhost>
Depends: libc6 (>= $glibc), adduser
Section: net
Priority: optional
Installed-Size: $size
Description: MCP tools implemented as sandboxed WebAssembly components
 Cordon serves MCP tools from WebAssembly components in a plugins folder. Every
 call runs in a fresh wasmtime instance; the host enforces fuel, time, memory,
 outbound hosts, credentials and idempotency.
CONTROL

mkdir -p "$out"
deb="$out/cordon_${version}_${arch}.deb"
# Owned by root in the package whoever builds it.
dpkg-deb --root-owner-group -Z"$compression" --build "$stage" "$deb" >/dev/null
echo "$deb"
