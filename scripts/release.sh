#!/usr/bin/env bash
# make release VERSION=X.Y.Z: set galaxy.yml's version, turn the changelog fragments into release X.Y.Z
# (changelogs/changelog.yaml and CHANGELOG.md), and build dist/immutable-root-X.Y.Z.tar.gz.
# Running it again for the same version adds fragments written since to that release.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export PATH="$repo/.venv/bin:$PATH"

version=${1:-}
if ! [[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "usage: make release VERSION=X.Y.Z (semantic version, got '${version}')" >&2
  exit 2
fi

sed -i "s/^version: .*/version: ${version}/" galaxy.yml
grep -qx "version: ${version}" galaxy.yml
antsibull-changelog lint
antsibull-changelog release --version "$version"
antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml
mkdir -p dist
ansible-galaxy collection build --force --output-path dist
echo "release ${version}: CHANGELOG.md, changelogs/changelog.yaml, dist/immutable-root-${version}.tar.gz"
echo "review and commit: git add galaxy.yml CHANGELOG.md changelogs && git commit -m 'Release ${version}'"
