#!/usr/bin/env bash
# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Usage: fill_btrfs.sh IMAGE TREE MOUNTPOINT
# Puts TREE into a new subvolume `@` of the btrfs filesystem in IMAGE.
# Run it inside `unshare --mount --propagation private`: the mount lives and dies with that namespace, and
# `mount -o loop` sets auto-clear on the loop device, so neither outlives a build that is killed.
# mkfs.btrfs 6.2 has --rootdir but no --subvol, hence the mount.
set -euo pipefail

image=$1
tree=$2
mnt=$3
tar_options=(--numeric-owner --xattrs --xattrs-include='*' --acls)

mkdir -p "$mnt"
mount -o loop,compress=zstd "$image" "$mnt"
trap 'umount "$mnt"' EXIT
btrfs subvolume create "$mnt/@" >/dev/null
tar -C "$tree" "${tar_options[@]}" -cf - . | tar -C "$mnt/@" "${tar_options[@]}" -xpf -
btrfs filesystem sync "$mnt"
trap - EXIT
umount "$mnt"
