#!/usr/bin/env bash
# One-command, idempotent setup of a fresh Debian 12 machine of this kind:
# Debian packages, rEFInd files (unpacked, never installed), the controller venv,
# and what ansible-test needs to run offline.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

# Debian packages the lab, the host tests and the sanity tests need.
apt_packages=(
  qemu-system-x86 qemu-utils ovmf mmdebstrap debootstrap btrfs-progs squashfs-tools erofs-utils
  pacman-package-manager makepkg arch-install-scripts libarchive-tools mtools gdisk strace
  shellcheck zstd dosfstools e2fsprogs xz-utils util-linux fakeroot openssh-client
  chromium
)

log() { printf '==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_debian_packages() {
  local missing=()
  local pkg
  for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "Debian packages: all ${#apt_packages[@]} present"
    return
  fi
  log "Debian packages: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# rEFInd's postinst installs itself onto the host's ESP (debconf default install_to_esp=true),
# so the package is only downloaded and unpacked into the cache.
unpack_refind() {
  local dest="$repo/.cache/refind"
  if [ -f "$dest/root/usr/share/refind/refind/refind_x64.efi" ]; then
    log "rEFInd: unpacked in $dest"
    return
  fi
  log "rEFInd: downloading and unpacking the .deb into $dest"
  rm -rf "$dest"
  mkdir -p "$dest/deb"
  (cd "$dest/deb" && apt-get download -qq refind)
  dpkg-deb -x "$dest"/deb/refind_*.deb "$dest/root"
}

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.13 python3.12 \
      "$HOME"/.pyenv/versions/3.13.*/bin/python3.13 "$HOME"/.pyenv/versions/3.12.*/bin/python3.12; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(not (3, 12) <= sys.version_info[:2] < (3, 14))' 2>/dev/null; then
      command -v "$candidate" 2>/dev/null || echo "$candidate"
      return
    fi
  done
  cat >&2 <<'EOT'
ERROR: no Python 3.13 or 3.12 found (ansible-core 2.21 needs >= 3.12).
Install one with pyenv (`pyenv install 3.13`) or point PYTHON at an interpreter: PYTHON=/path/to/python3.13 make setup
EOT
  exit 1
}

make_venv() {
  local python stamp want
  want=$(cat requirements-dev.txt requirements.lock | sha256sum | cut -d' ' -f1)
  stamp=.venv/.requirements.sha256
  if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "venv: up to date ($(.venv/bin/python --version))"
    return
  fi
  python=$(find_python)
  if ! [ -x .venv/bin/python ]; then
    log "venv: creating .venv with $python"
    "$python" -m venv .venv
  fi
  log "venv: installing requirements-dev.txt"
  # This machine kind's pip.conf lists local indexes that do not exist; pip warns once per package.
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt -c requirements.lock \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$want" > "$stamp"
}

# galaxy-importer and ansible-builder pin versions (attrs, flake8) that conflict with the controller
# venv, so they get a venv of their own; the ecosystem tests run them from there.
make_tools_venv() {
  local venv=.cache/tools-venv stamp want python
  want=$(sha256sum requirements-tools.txt | cut -d' ' -f1)
  stamp=$venv/.requirements.sha256
  if [ -x $venv/bin/ansible-builder ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "tools venv: up to date ($venv)"
    return
  fi
  python=$(find_python)
  log "tools venv: creating $venv with $python (galaxy-importer, ansible-builder)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  $venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-tools.txt \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$want" > "$stamp"
}

# ansible-test bootstraps pip in its sanity venvs with a get-pip script from a host this machine
# cannot reach; a local stand-in built on ensurepip does the same job.
prepare_ansible_test() {
  local version cache
  version=$(.venv/bin/python - <<'EOT'
import pathlib, re, ansible_test
source = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
print(re.search(r"pip='([0-9.]+)'", source.read_text()).group(1))
EOT
)
  cache="$HOME/.ansible/test/cache/get_pip_${version//./_}.py"
  if [ -f "$cache" ]; then
    log "ansible-test: pip bootstrap shim present ($cache)"
    return
  fi
  log "ansible-test: writing pip bootstrap shim $cache"
  mkdir -p "$(dirname "$cache")"
  cat > "$cache" <<'EOT'
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", *args])
EOT
}

install_debian_packages
unpack_refind
make_venv
make_tools_venv
prepare_ansible_test
log "setup complete"
