#!/usr/bin/env bash
# The main job: boot a lab VM, apply playbooks/demo.yml to it twice (the second run must change nothing),
# print what the collection did, and shut the VM down (also when something fails).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
python="$repo/.venv/bin/python"
export PATH="$repo/.venv/bin:$PATH"
labctl=("$python" molecule/lab/labctl.py)
name="demo-$$"
work=$(mktemp -d "${TMPDIR:-/tmp}/immutable-root-demo.XXXXXX")

cleanup() {
  "${labctl[@]}" --state-dir "$work/lab" down "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
  [ -z "${ANSIBLE_COLLECTIONS_PATH:-}" ] || rm -rf -- "$ANSIBLE_COLLECTIONS_PATH"
}
trap cleanup EXIT

log() { printf '\n==> %s\n' "$*"; }

log "Building (or verifying) the cached ext4 lab image"
"${labctl[@]}" build ext4 >/dev/null

log "Booting lab VM $name (TCG; about a minute)"
started=$SECONDS
"${labctl[@]}" --state-dir "$work/lab" up "$name" --variant ext4 --disk 1G > "$work/instance.json"
echo "SSH answered after $((SECONDS - started)) s"

"$python" - "$work/instance.json" > "$work/inventory.yml" <<'EOT'
import json
import sys

ssh = json.load(open(sys.argv[1]))["ssh"]
print("""all:
  hosts:
    demo:
      ansible_host: %(host)s
      ansible_port: %(port)d
      ansible_user: %(user)s
      ansible_ssh_private_key_file: %(key)s
      ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
      ansible_python_interpreter: /usr/bin/python3
      ansible_pipelining: true
      ansible_remote_tmp: /tmp/.ansible-remote""" % ssh)
EOT

export ANSIBLE_COLLECTIONS_PATH
ANSIBLE_COLLECTIONS_PATH=$(scripts/stage.sh)
export ANSIBLE_NOCOLOR=1 ANSIBLE_DISPLAY_SKIPPED_HOSTS=false ANSIBLE_HOST_KEY_CHECKING=false

run_demo() {
  local label=$1 started=$SECONDS
  log "$label: ansible-playbook playbooks/demo.yml"
  ansible-playbook -i "$work/inventory.yml" playbooks/demo.yml | tee "$work/$label.log" | \
    sed -n '/TASK \[Summarise/,/^$/p;/PLAY RECAP/,$p'
  echo "$label took $((SECONDS - started)) s"
}

run_demo first-run
run_demo re-run
if ! grep -Eq 'demo +: ok=[0-9]+ +changed=0 ' "$work/re-run.log"; then
  echo "The re-run changed something: the collection is not idempotent here." >&2
  exit 1
fi
log "Done: the re-run changed nothing. Shutting the VM down."
