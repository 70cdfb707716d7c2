#!/bin/sh
# Checks a built Debian package without installing it on this machine: unpacks it into a
# throwaway root (dpkg-deb -x), checks what it holds and how (binary, unit, conffile, modes,
# maintainer scripts, control fields), runs the unpacked binary, and has `systemd-analyze verify`
# check the unit inside that root, failing on any warning it prints.
#   scripts/check-deb.sh PACKAGE.deb
set -eu
deb=$1
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
fail() { echo "check-deb: $*" >&2; exit 1; }

dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$root/DEBIAN"
control=$(dpkg-deb -f "$deb")
echo "$control" | grep -qx 'Package: cordon' || fail "Package is not cordon"
echo "$control" | grep -q '^Depends: libc6 (>= [0-9.]*), adduser$' || fail "Depends: $(echo "$control" | grep Depends)"
[ "$(cat "$root/DEBIAN/conffiles")" = /etc/cordon/cordon.toml ] || fail "conffiles"
for script in postinst prerm postrm; do
    [ -x "$root/DEBIAN/$script" ] || fail "$script is missing or not executable"
    sh -n "$root/DEBIAN/$script" || fail "$script does not parse"
done
grep -q 'adduser --system' "$root/DEBIAN/postinst" || fail "postinst creates no system user"

# Owners and modes as dpkg will install them.
listing=$(dpkg-deb -c "$deb")
echo "$listing" | grep -q '^-rwxr-xr-x root/root .* ./usr/bin/cordon$' || fail "/usr/bin/cordon: $(echo "$listing" | grep usr/bin/cordon)"
echo "$listing" | grep -q '^-rw-r----- root/root .* ./etc/cordon/cordon.toml$' || fail "the config's mode"
echo "$listing" | grep -q '^-rw-r--r-- root/root .* ./lib/systemd/system/cordon.service$' || fail "the unit's mode"
if echo "$listing" | grep -v ' root/root ' | grep -q .; then fail "files not owned by root"; fi

"$root/usr/bin/cordon" --version | grep -q '^cordon ' || fail "the packaged binary does not run"
# The packaged config parses (a one-shot command on it, with its paths moved into the root).
sed -e "s|/var/lib/cordon|$root/var/lib/cordon|g" -e "s|/var/log/cordon|$root/var/log/cordon|g" \
    "$root/etc/cordon/cordon.toml" > "$root/check.toml"
mkdir -p "$root/var/lib/cordon/plugins"
"$root/usr/bin/cordon" tools --config "$root/check.toml" > /dev/null || fail "the packaged config does not load"

unit="$root/lib/systemd/system/cordon.service"
grep -q '^ExecStart=/usr/bin/cordon serve --config /etc/cordon/cordon.toml$' "$unit" || fail "ExecStart"
grep -q '^ProtectSystem=strict$' "$unit" || fail "the unit lost its hardening"
# systemd-analyze resolves the unit's dependencies and executables inside the root: give it the
# targets and slices it names, and the kill of ExecReload.
cp /lib/systemd/system/*.target /lib/systemd/system/*.slice "$root/lib/systemd/system/" 2>/dev/null || true
mkdir -p "$root/bin" && cp /bin/kill "$root/bin/kill"
out=$(systemd-analyze verify --root="$root" cordon.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warned: $out"
echo "check-deb: $(basename "$deb") is well formed, and systemd-analyze verify accepts its unit"
