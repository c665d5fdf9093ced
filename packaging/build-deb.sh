#!/usr/bin/env bash
# Builds the Debian package of masv-agent: target/debian/masv-agent_VERSION-1_ARCH.deb.
#   packaging/build-deb.sh            # then: sudo dpkg -i target/debian/masv-agent_*.deb
# Extra arguments go to `cargo deb` (e.g. --output DIR). Needs cargo-deb
# (`cargo install --locked cargo-deb`). What goes where is [package.metadata.deb] in Cargo.toml;
# this script makes the files generated from the binary (man pages, completions) and the
# packaged unit into target/packaging/ first.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || {
  echo "packaging/build-deb.sh needs cargo-deb: cargo install --locked cargo-deb" >&2
  exit 1
}

cargo build --release --locked
masv="${CARGO_TARGET_DIR:-target}/release/masv"

# Always target/packaging (Cargo.toml's assets name it), whatever CARGO_TARGET_DIR says.
stage=target/packaging
rm -rf "$stage"
mkdir -p "$stage/man" "$stage/completions" "$stage/systemd"

"$masv" man --out "$stage/man"
gzip -9n "$stage"/man/*.1
"$masv" completions bash >"$stage/completions/masv"
"$masv" completions zsh >"$stage/completions/_masv"
"$masv" completions fish >"$stage/completions/masv.fish"
"$masv" config schema >"$stage/masv-agent.schema.json"

# The example unit, started from /usr/bin, its manual install steps replaced by the package's.
unit="$stage/systemd/masv-agent.service"
awk '
  /^# Install \(as root\):/ { skipping = 1; next }
  skipping && /^#   / { next }
  skipping {
    skipping = 0
    print "# Installed by the masv-agent package: edit /etc/masv-agent/agent.toml, then"
    print "# `systemctl enable --now masv-agent`. Change the unit with `systemctl edit masv-agent`"
    print "# (drop-ins; examples in /usr/share/doc/masv-agent/examples/systemd/)."
  }
  { print }
' examples/systemd/masv-agent.service | sed -e 's|/usr/local/bin/masv|/usr/bin/masv|g' -e 's|see chown.conf beside this file|see /usr/share/doc/masv-agent/examples/systemd/chown.conf|' >"$unit"
grep -q '^ExecStart=/usr/bin/masv server start' "$unit"
! grep -q '/usr/local' "$unit"

cargo deb --no-build --strip "$@"
