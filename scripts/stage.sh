#!/usr/bin/env bash
# Copy the collection's tracked and untracked-but-not-ignored files to
# <stage>/ansible_collections/immutable/root outside the repository and print <stage>.
# ansible-test only runs from such a path, and a copy inside the repository would be
# skipped silently (it sees the outer git repository).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
stage="${TMPDIR:-/tmp}/immutable-root-stage-$(printf '%s' "$repo" | cksum | cut -d' ' -f1)"
dest="$stage/ansible_collections/immutable/root"

rm -rf "$dest"
mkdir -p "$dest"
(cd "$repo" && git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
   [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf -) | tar -xf - -C "$dest"
echo "$stage"
