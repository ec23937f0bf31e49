#!/usr/bin/env bash
# The HTML docsite, offline: scripts/docsite.sh COLLECTION_DIR [BUILD_DIR] (COLLECTION_DIR a staged or installed
# copy; ANSIBLE_COLLECTIONS_PATH must resolve immutable.root to it). Writes BUILD_DIR/html/index.html (default
# docs/build); any Sphinx warning fails the build.
#
# Pages: antsibull-docs' collection pages (every module, and every role from its meta/argument_specs.yml),
# one page per playbook (scripts/docsite/playbooks.py), and every guide docs/*.md plus the VM lab's README,
# rendered by MyST with their pictures from docs/images/. New guides, roles and playbooks appear by themselves.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
collection=${1:?usage: scripts/docsite.sh COLLECTION_DIR}
site="$repo/scripts/docsite"
build=${2:-$repo/docs/build}
rst="$build/rst"

rm -rf "$build"
mkdir -p "$rst"
chmod 0755 "$build" "$rst"  # antsibull-docs wants its destination writable by its owner only

antsibull-docs --config-file "$site/antsibull-docs.cfg" collection --cleanup everything --use-current \
  --squash-hierarchy --dest-dir "$rst" immutable.root

mkdir -p "$rst/guides"
cp "$collection"/docs/*.md "$rst/guides/"
cp "$collection/molecule/lab/README.md" "$rst/guides/vm_lab.md"
if [ -d "$collection/docs/images" ]; then cp -r "$collection/docs/images" "$rst/guides/images"; fi
# the Python of the Sphinx install (it has PyYAML)
"$(dirname "$(command -v sphinx-build)")/python" "$site/playbooks.py" "$collection/playbooks" "$rst/playbooks"

cat >> "$rst/index.rst" <<'EOT'

Guides, playbooks and reference
-------------------------------

.. toctree::
    :maxdepth: 1
    :caption: Guides
    :glob:

    guides/*

.. toctree::
    :maxdepth: 2
    :caption: Playbooks

    playbooks/index

.. toctree::
    :maxdepth: 1
    :caption: Reference

    environment_variables
EOT

sphinx-build -q -b html -c "$site" -W --keep-going -n "$rst" "$build/html"
pages=$(find "$build/html" -name '*.html' ! -name search.html ! -name genindex.html | wc -l)
echo "docsite: $pages pages in $build/html (open $build/html/index.html)"
