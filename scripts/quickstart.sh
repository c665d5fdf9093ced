#!/usr/bin/env bash
# The quickstart, end to end on one machine: an agent with a hub inside it runs the rules of
# examples/configs/quickstart.toml. Files dropped in target/quickstart/outbox/ are uploaded as a
# link package, the link lands in links/, and the links rule downloads it into inbox/.
#
#   scripts/quickstart.sh          drop two sample files, wait for them in inbox/, stop
#   scripts/quickstart.sh --keep   leave the agent running: drop your own files in outbox/
set -euo pipefail
cd "$(dirname "$0")/.."
keep=false
[ "${1:-}" = "--keep" ] && keep=true

cargo build --release --quiet
masv="${CARGO_TARGET_DIR:-target}/release/masv"
root=target/quickstart
rm -rf "$root"
mkdir -p "$root/outbox" "$root/inbox"

"$masv" config check examples/configs/quickstart.toml
# masv commands find the agent's API token through its configuration (its data folder).
export MASV_CONFIG=examples/configs/quickstart.toml
RUST_LOG=${RUST_LOG:-info} "$masv" server start --config examples/configs/quickstart.toml 2> "$root/agent.log" &
agent=$!
trap '[ "$keep" = true ] || kill $agent 2>/dev/null' EXIT
for _ in $(seq 100); do
  "$masv" automation ls >/dev/null 2>&1 && break
  sleep 0.1
done

echo "Dropping two files in $root/outbox/ ..."
mkdir -p "$root/outbox/reel 1"
head -c 20000000 /dev/urandom > "$root/outbox/reel 1/take1.mov"
echo "Scene 12, take 3: use this one." > "$root/outbox/notes.txt"
sums=$(cd "$root/outbox" && sha256sum "reel 1/take1.mov" notes.txt)

echo "Waiting for them to arrive in $root/inbox/ (upload, link, automatic download) ..."
for _ in $(seq 600); do
  if [ "$(find "$root/inbox" -type f ! -name '*.part' | wc -l)" -ge 2 ]; then break; fi
  sleep 0.2
done
package=$(find "$root/inbox" -mindepth 1 -maxdepth 1 -type d | head -n 1)
if [ -z "$package" ] || ! (cd "$package" && echo "$sums" | sha256sum --check --quiet); then
  echo "The files did not arrive intact; see $root/agent.log" >&2
  exit 1
fi
echo
"$masv" upload ls
"$masv" download ls
"$masv" automation ls
echo
echo "Arrived intact in: $package"
echo "The agent's log: $root/agent.log"
if [ "$keep" = true ]; then
  echo "The agent keeps running (pid $agent): drop files in $root/outbox/; stop it with: kill $agent"
fi
