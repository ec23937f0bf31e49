#!/usr/bin/env bash
# Run every benchmark in bench/ (each prints a table of ratios measured in one run).
# Benchmarks mount and use loop devices, so they run in a private mount namespace like the host tests.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export PATH="$repo/.venv/bin:$PATH"
status=0
for script in bench/[!_]*.py; do
  [ -e "$script" ] || continue
  printf '\n==> %s\n' "$script"
  unshare --mount --propagation private "$repo/.venv/bin/python" "$script" || status=1
done
exit "$status"
