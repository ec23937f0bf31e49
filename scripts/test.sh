#!/usr/bin/env bash
# The whole test suite, in stages: scripts/test.sh [stage...]
# Stages: lint docs types sanity units pytest (default: all of them, in that order); ecosystem runs only
# tests/ecosystem (pytest includes it).
# pytest runs last so the run ends with its summary line; PYTEST_ADDOPTS passes extra options to it.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv="$repo/.venv"
export PATH="$venv/bin:$PATH"
# Interpreter discovery would pick a broken pyenv shim.
export ANSIBLE_PYTHON_INTERPRETER="$venv/bin/python"

stage_root=$(scripts/stage.sh)
trap 'rm -rf -- "$stage_root"' EXIT
export ANSIBLE_COLLECTIONS_PATH="$stage_root"
collection="$stage_root/ansible_collections/immutable/root"
python_version=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

log() { printf '\n==> %s\n' "$*"; }

stage_lint() {
  log "yamllint"
  yamllint -s .
  log "ansible-lint (production profile, offline)"
  ansible-lint --offline --profile production
}

stage_docs() {
  log "antsibull-docs lint-collection-docs"
  (cd "$collection" && antsibull-docs lint-collection-docs --plugin-docs .)
  log "docsite: antsibull-docs + Sphinx, warnings fail (docs/build/html)"
  scripts/docsite.sh "$collection"
}

stage_types() {
  log "mypy (module_utils and modules)"
  (cd "$stage_root" && mypy --config-file "$collection/.mypy.ini" \
    -p ansible_collections.immutable.root.plugins.module_utils \
    -p ansible_collections.immutable.root.plugins.modules)
}

stage_sanity() {
  log "ansible-test sanity"
  (cd "$collection" && ansible-test sanity --local --python "$python_version" --color no)
  # Modules run on managed nodes' own python3 (3.9+): compile and import them on every such Python here.
  # ansible-test finds interpreters on PATH only (pyenv shims fail), so the real bin directories go first.
  local pythons="" bin
  for bin in "$HOME"/.pyenv/versions/3.{9,10,11,12,13}.*/bin; do
    [ -d "$bin" ] && pythons="$pythons$bin:"
  done
  log "ansible-test sanity compile/import on ${pythons:-no extra Pythons}"
  (cd "$collection" && PATH="$venv/bin:$pythons$PATH" ansible-test sanity --local --test compile --test import --color no)
}

stage_units() {
  log "ansible-test units (with branch coverage of the pure code)"
  (cd "$collection" && \
    ansible-test units --local --python "$python_version" --color no --coverage && \
    ansible-test coverage report --include 'plugins/module_utils/*' --show-missing --color no)
}

stage_pytest() {
  log "pytest: unit, host integration and VM scenarios (in a private mount namespace)"
  # The private namespace is a second fence: every host test also makes its own namespaces,
  # and nothing it mounts can reach this machine's mount table.
  unshare --mount --propagation private \
    "$venv/bin/python" -m pytest -p no:cacheprovider -rsxf tests
}

stage_ecosystem() {
  log "pytest: the release tarball, galaxy-importer, ansible-builder and the docsite in Chromium"
  unshare --mount --propagation private \
    "$venv/bin/python" -m pytest -p no:cacheprovider -rsxf tests/ecosystem
}

stage_hostile() {
  log "pytest: the hostile-input campaign of tests/hostile with the long Hypothesis profile (2000 examples per property)"
  HYPOTHESIS_PROFILE=hostile unshare --mount --propagation private \
    "$venv/bin/python" -m pytest -p no:cacheprovider -rsxf --durations=10 tests/hostile
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(lint docs types sanity units pytest)
for stage in "${stages[@]}"; do
  "stage_$stage"
done
