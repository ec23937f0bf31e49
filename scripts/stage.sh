#!/usr/bin/env bash
# Copy the collection's tracked and untracked-but-not-ignored files to
# <stage>/ansible_collections/immutable/root outside the repository and print <stage>.
# ansible-test only runs from such a path, and a copy inside the repository would be
# skipped silently (it sees the outer git repository).
# <stage> is a fresh mktemp directory (mode 0700, unguessable name): a fixed /tmp path that is
# emptied with rm -rf lets anyone who creates it first (as a symlink) choose what gets removed.
# The caller removes <stage> when done.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
stage=$(mktemp -d "${TMPDIR:-/tmp}/immutable-root-stage.XXXXXXXXXX")
dest="$stage/ansible_collections/immutable/root"

mkdir -p "$dest"
(cd "$repo" && git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
   [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf -) | tar -xf - -C "$dest"
echo "$stage"
