#!/usr/bin/env bash
# The download benchmark (release build): see scripts/bench.py for the options and what is measured.
set -euo pipefail
exec python3 "$(dirname "$0")/bench.py" download "$@"
