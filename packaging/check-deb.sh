#!/usr/bin/env bash
# Installs the built .deb on this machine, checks what the README's Install section relies on,
# then purges it: nothing is left installed. Run as root by .ci/run after packaging/build-deb.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls target/debian/masv-agent_*.deb)
purge() { dpkg --purge masv-agent >/dev/null 2>&1 || true; }
trap purge EXIT
fail() { echo "packaging/check-deb.sh: $*" >&2; exit 1; }

dpkg -i "$deb"
# Installed twice (a reinstall runs postinst again): the maintainer scripts are idempotent.
dpkg -i "$deb"

unit=/usr/lib/systemd/system/masv-agent.service
[ -f "$unit" ] || fail "$unit is not installed"
grep -q '^ExecStart=/usr/bin/masv server start' "$unit" || fail "$unit does not start /usr/bin/masv"
# systemd-analyze only warns about unknown keys and bad values (exit 0): any output fails.
if ! out=$(systemd-analyze verify "$unit" 2>&1) || [ -n "$out" ]; then
  fail "systemd-analyze verify $unit: $out"
fi
/usr/bin/masv --version | grep -Eq '^masv [0-9.]+ \(commit ([0-9a-f]+|unknown), built [0-9-]{10}\)$' \
  || fail "masv --version: $(/usr/bin/masv --version)"
getent passwd masv-agent | grep -q ':/usr/sbin/nologin$' || fail "no masv-agent system user"
[ "$(stat -c '%U:%G %a' /srv/masv)" = "masv-agent:masv-agent 750" ] || fail "/srv/masv: $(stat -c '%U:%G %a' /srv/masv)"
dpkg-query --showformat='${Conffiles}\n' --show masv-agent | grep -q ' /etc/masv-agent/agent.toml ' \
  || fail "/etc/masv-agent/agent.toml is not a conffile"
[ "$(stat -c '%U:%G %a' /etc/masv-agent/agent.toml)" = "root:masv-agent 640" ] || fail "agent.toml: $(stat -c '%U:%G %a' /etc/masv-agent/agent.toml)"
/usr/bin/masv config check /etc/masv-agent/agent.toml >/dev/null || fail "the shipped agent.toml does not check"
man -w masv-download-start | grep -q '^/usr/share/man/man1/masv-download-start.1.gz$' || fail "no man page"
man -P cat masv 2>/dev/null | grep -q 'EXIT STATUS' || fail "masv(1) has no EXIT STATUS"
for f in /usr/share/bash-completion/completions/masv /usr/share/zsh/vendor-completions/_masv \
  /usr/share/fish/vendor_completions.d/masv.fish; do
  [ -s "$f" ] || fail "no completion $f"
done

dpkg --purge masv-agent
! getent passwd masv-agent >/dev/null || fail "purge left the masv-agent user"
[ ! -e /etc/masv-agent ] && [ ! -e /usr/bin/masv ] || fail "purge left files"
echo "packaging/check-deb.sh: $deb installs, verifies and purges cleanly"
