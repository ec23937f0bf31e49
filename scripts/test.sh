#!/usr/bin/env bash
# shellcheck disable=SC2317  # the stage_* functions are called by name
# The whole test suite, in stages: scripts/test.sh [stage...]
# Stages: lint docs types sanity units pytest (default: all of them); ecosystem runs only tests/ecosystem (pytest
# includes it); long runs the tests marked `long` (make test-long), which pytest leaves out; powercut runs the power cuts
# inside VMs (make powercut), which every other stage leaves out; vm and host split pytest
# into the VM tests and the rest.
# Without stages the suite runs as two lanes at once, so the VM lane (QEMU under TCG, SSH waits and reboots) and the
# rest overlap: lane "vm" is the VM tests, lane "checks" is lint docs types sanity units host, then the VM tests marked
# checks_lane (fleet, gentoo_usr_move, sysext_257), which run beside the vm lane's last scenarios. Each lane's output is
# prefixed with its name; the run fails if either lane fails. PYTEST_ADDOPTS passes extra options to pytest.
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

# The private namespace is a second fence: every host test also makes its own namespaces,
# and nothing it mounts can reach this machine's mount table.
run_pytest() {
  unshare --mount --propagation private "$venv/bin/python" -m pytest -p no:cacheprovider -rsxf "$@"
}

stage_pytest() {
  log "pytest: unit, host integration and VM scenarios (in a private mount namespace)"
  run_pytest --durations=25 -m "not long and not powercut" tests
}

stage_host() {
  log "pytest: unit, host integration and ecosystem tests (in a private mount namespace)"
  run_pytest --durations=15 -m "not long and not powercut" --ignore=tests/vm tests
}

stage_vm() {
  log "pytest: the VM lab and the molecule scenarios"
  run_pytest --durations=0 -m "not long and not powercut" tests/vm
}

# make test's two lanes split the VM tests: the checks lane runs those marked checks_lane once its checks are done.
stage_vm_lane() {
  log "pytest: the VM lab and the molecule scenarios of the vm lane"
  run_pytest --durations=0 -m "not long and not powercut and not checks_lane" tests/vm
}

stage_vm_after_checks() {
  log "pytest: the molecule scenarios of the checks lane (marked checks_lane)"
  run_pytest --durations=0 -m "checks_lane" tests/vm
}

stage_long() {
  log "pytest: the scenarios beyond make test's budget (marked long)"
  run_pytest --durations=0 -m long tests
}

stage_powercut() {
  log "pytest: power cuts inside lab VMs at every step boundary (tests/vm/test_powercut_vm.py)"
  run_pytest --durations=0 -s -m powercut tests/vm
}

stage_ecosystem() {
  log "pytest: the release tarball, galaxy-importer, ansible-builder and the docsite in Chromium"
  run_pytest tests/ecosystem
}

stage_hostile() {
  log "pytest: the hostile-input campaign of tests/hostile with the long Hypothesis profile (2000 examples per property)"
  HYPOTHESIS_PROFILE=hostile run_pytest --durations=10 tests/hostile
}


# lane NAME STAGE...: the stages in order, stopping at the first failure, each line prefixed with [NAME].
# No `||` around a stage: errexit would be ignored inside it and a failing command in mid-stage would pass.
lane() {
  local name=$1
  shift
  (
    set -eo pipefail
    for stage in "$@"; do
      "stage_$stage" 2>&1 | sed -u "s/^/[$name] /"
    done
  )
}

if [ $# -gt 0 ]; then
  for stage in "$@"; do
    "stage_$stage"
  done
  exit 0
fi

digests="$repo/tests/output/molecule"
rm -f "$digests"/*.digest
start=$(date +%s)
lane vm vm_lane &
vm_pid=$!
lane checks lint docs types sanity units host vm_after_checks &
checks_pid=$!
status=0
wait "$checks_pid" || { status=1; log "lane checks FAILED"; }
log "lane checks ended after $(( $(date +%s) - start )) s"
wait "$vm_pid" || { status=1; log "lane vm FAILED"; }
log "lane vm ended after $(( $(date +%s) - start )) s"
for digest in "$digests"/*.digest; do
  if [ -e "$digest" ]; then log "the last failed tasks of scenario $(basename "$digest" .digest)"; cat "$digest"; fi
done
[ "$status" -eq 0 ] && log "make test: both lanes passed in $(( $(date +%s) - start )) s"
exit "$status"
