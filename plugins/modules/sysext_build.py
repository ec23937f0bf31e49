#!/usr/bin/python
# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: sysext_build
short_description: Build a systemd system extension image from packages or directories
version_added: 0.1.0
description:
  - Builds the extension image O(name) in O(dest) from package files (C(.pkg.tar.zst), C(.pkg.tar.xz), other
    tarballs) or directories, as a directory tree, a squashfs image or an erofs image. This is the
    "build packages, don't install them" half of an immutable C(/usr).
  - Only the O(hierarchies) (C(/usr) and C(/opt) by default) of each source go into the image; everything
    else (C(.PKGINFO), C(.MTREE), C(.BUILDINFO), C(.INSTALL), C(etc/), ...) is left out and listed in
    RV(dropped). A source that ships C(usr/lib/os-release) is refused, because systemd-sysext refuses such
    images. Two sources that ship one path with different content are refused.
  - Writes C(usr/lib/extension-release.d/extension-release.NAME) with O(release) on top of defaults from
    O(root)'s os-release (C(ID), then C(SYSEXT_LEVEL) or else C(VERSION_ID), and C(ARCHITECTURE)), plus
    C(IMMUTABLE_ROOT_SYSEXT_DIGEST), a digest of the sources and options. When the image in place carries
    the same digest, nothing is done.
  - The image is assembled under a temporary C(.#) name beside O(dest) (inside it only when O(dest) is a
    mount point of its own; systemd-sysext ignores C(.#) names), checked (filesystem type, the format's own
    checker, a read-only mount of it in a private mount namespace with its release file read back), made
    durable, and only then renamed into place. A half-built image is never visible to systemd-sysext.
  - Builds are reproducible where the tools allow it. Directories get one fixed timestamp (the newest source
    file's), files keep theirs, squashfs and erofs images get a fixed creation time, and erofs a UUID derived
    from the digest.
author:
  - immutable.root developers (@immutable-root)
requirements:
  - C(bsdtar) (libarchive-tools, with zstd/xz support) for package sources; C(mksquashfs) and C(unsquashfs)
    (squashfs-tools) or C(mkfs.erofs) and C(fsck.erofs) (erofs-utils); util-linux C(mount) and C(blkid).
extends_documentation_fragment:
  - immutable.root.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
  platform:
    platforms: linux
options:
  name:
    description:
      - The image name; the image is C(NAME) (directory) or C(NAME.raw). It must match
        C(^[A-Za-z0-9][A-Za-z0-9._-]*$).
    type: str
    required: true
  root:
    description:
      - The tree the image is for; its os-release gives the release defaults. Absolute and existing.
    type: path
    default: /
  dest:
    description:
      - Where the image goes. Defaults to C(var/lib/extensions) under O(root). Created when missing.
    type: path
  format:
    description:
      - V(directory) is a plain tree; V(squashfs) and V(erofs) are raw images, which can be replaced while
        merged (a merged directory image cannot, and the module refuses to).
    type: str
    choices: [directory, squashfs, erofs]
    default: squashfs
  compression:
    description:
      - Compression of a raw image. squashfs takes V(gzip), V(xz), V(zstd) (default), V(lz4), V(lzo) or V(none);
        erofs takes V(lz4), V(lz4hc) (default) or V(none). The kernel must support it (Debian's, Arch's and
        Fedora's kernels support all of these).
    type: str
  compression_level:
    description:
      - Level for squashfs V(zstd) (1 to 22, default 3) and V(gzip) (1 to 9), and erofs V(lz4hc) (0 to 12); the
        other compressions take none. The default zstd level is 3 rather than mksquashfs's own 15; on 50 MB of
        package content, level 15 made the whole build about 5 times as slow (mksquashfs alone 17 times) for an
        image about 10% smaller.
    type: int
  sources:
    description:
      - Package files or tarballs (C(.pkg.tar.zst), C(.pkg.tar.xz), C(.pkg.tar.gz), C(.tar), C(.tar.gz),
        C(.tar.xz), C(.tar.zst), ...) and directories, merged in this order.
      - In a package or tarball, a hard link to a member the image leaves out (C(etc/tool.conf) for
        C(usr/share/tool/tool.conf)) becomes a file of its own with that member's content, owner and mode; hard
        links among kept members stay links to one another. A hard link to a member the source does not ship,
        or through C(..), is refused, and so is any member bsdtar refuses to unpack (one through a symlink, one
        with C(..)); the error names the member and bsdtar's reason, and nothing is written.
    type: list
    elements: path
    required: true
  hierarchies:
    description:
      - The parts of the sources that go into the image. C(/), C(/proc), C(/sys), C(/dev) and C(/run) are refused.
    type: list
    elements: path
    default: [/usr, /opt]
  release:
    description:
      - Extension-release fields (os-release(5) keys and the C(SYSEXT_*) ones) added to or overriding the
        defaults; a null value removes a default, for instance C(ARCHITECTURE) for scripts. C(ID=_any) makes
        an image for every OS. Unknown keys are refused.
    type: dict
    default: {}
notes:
  - With O(format=directory) and an existing image of that name merged, the module fails instead of replacing
    files under a running overlay.
  - Run M(immutable.root.sysext_merge) with O(immutable.root.sysext_merge#module:state=refreshed) to use a
    rebuilt image that is merged under the same name.
seealso:
  - module: immutable.root.sysext_merge
"""

EXAMPLES = r"""
- name: Turn makepkg output into an extension, never installing the package
  immutable.root.sysext_build:
    name: tools
    sources:
      - /home/builder/pkg/ripgrep-14.1.0-1-x86_64.pkg.tar.zst
      - /home/builder/pkg/fd-10.1.0-1-x86_64.pkg.tar.zst
  notify: Refresh system extensions

- name: A static tool for any distribution, from a directory, as erofs
  immutable.root.sysext_build:
    name: static-tools
    format: erofs
    sources: [/srv/static-tools]
    release:
      ID: _any
      ARCHITECTURE: null
"""

RETURN = r"""
path:
  description: The image.
  returned: always
  type: str
  sample: /var/lib/extensions/tools.raw
format:
  description: V(directory), V(squashfs) or V(erofs).
  returned: always
  type: str
file_count:
  description: Non-directory entries in the image, its release file included.
  returned: always
  type: int
  sample: 42
size:
  description:
    - Size of RV(path) in bytes, null while it does not exist (check mode before the first build). For a
      directory image this is the directory's own size; Ansible also adds the usual file attributes of
      RV(path) (C(uid), C(gid), C(owner), C(group), C(mode), C(state)).
  returned: always
  type: int
digest:
  description: The digest of sources and options, as recorded in the image's release file.
  returned: always
  type: str
  sample: sha256:1f0e...
release:
  description: The fields of the release file, the digest included.
  returned: always
  type: dict
  sample: {ID: debian, VERSION_ID: "12", ARCHITECTURE: x86-64, IMMUTABLE_ROOT_SYSEXT_DIGEST: "sha256:1f0e..."}
dropped:
  description:
    - Source paths left out because they are outside O(hierarchies), or are release files this module replaces
      (at most 1000; see RV(dropped_count)). Directories end with C(/); for a directory source a dropped
      directory is listed, not its content.
  returned: always
  type: list
  elements: str
  sample: [.BUILDINFO, .MTREE, .PKGINFO, etc/, etc/tool.conf]
dropped_count:
  description: How many source paths were left out.
  returned: always
  type: int
actions:
  description: The steps taken (or, in check mode, that would be taken), in order.
  returned: always
  type: list
  elements: dict
  sample:
    - action: build
      target: /var/lib/extensions/tools.raw
      detail: "squashfs, 42 files from 2 sources (sha256:1f0e...)"
    - action: install
      target: /var/lib/extensions/tools.raw
      detail: new image
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.root.plugins.module_utils._core.module import ImmutableRootModule
from ansible_collections.immutable.root.plugins.module_utils._core.actions import as_dicts
from ansible_collections.immutable.root.plugins.module_utils._core.errors import (
    ImmutableRootError, ParameterError, failure,
)
from ansible_collections.immutable.root.plugins.module_utils._core.paths import validate_path
from ansible_collections.immutable.root.plugins.module_utils._core.runner import Runner
from ansible_collections.immutable.root.plugins.module_utils._sysext.build_model import (
    BuildRequest, DROPPED_LIMIT, Source,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.build_plan import (
    image_path,
    plan_build,
    source_kind,
    validate_compression,
    validate_compression_level,
    validate_name,
    validate_release,
    with_digest,
)
from ansible_collections.immutable.root.plugins.module_utils._sysext.build_execute import Builder
from ansible_collections.immutable.root.plugins.module_utils._sysext.build_observe import observe_build
from ansible_collections.immutable.root.plugins.module_utils._sysext.merge_plan import validate_hierarchies


def build_request(params: dict) -> BuildRequest:
    name = validate_name(params["name"])
    root = validate_path("root", params["root"], must_exist=True, directory=True)
    dest = validate_path("dest", params["dest"]) if params["dest"] else os.path.join(root, "var/lib/extensions")
    if os.path.lexists(dest) and not os.path.isdir(dest):
        validate_path("dest", dest, directory=True)
    sources = []
    for path in params["sources"] or []:
        validate_path("sources", path, must_exist=True)
        sources.append(Source(path, source_kind(path, os.path.isdir(path), os.path.isfile(path))))
    if not sources:
        raise ParameterError("sources", "must name at least one package, tarball or directory")
    compression = validate_compression(params["format"], params["compression"])
    return BuildRequest(
        name=name,
        root=root,
        dest=dest,
        format=params["format"],
        sources=tuple(sources),
        hierarchies=validate_hierarchies(params["hierarchies"]),
        release=validate_release(params["release"] or {}),
        compression=compression,
        compression_level=validate_compression_level(params["format"], compression, params["compression_level"]),
    )


def main() -> None:
    module: AnsibleModule = ImmutableRootModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            root=dict(type="path", default="/"),
            dest=dict(type="path"),
            format=dict(type="str", choices=["directory", "squashfs", "erofs"], default="squashfs"),
            compression=dict(type="str"),
            compression_level=dict(type="int"),
            sources=dict(type="list", elements="path", required=True),
            hierarchies=dict(type="list", elements="path", default=["/usr", "/opt"]),
            release=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    builder = None
    try:
        request = build_request(module.params)
        runner = Runner(module)
        observed, scan = observe_build(runner, request)
        plan = plan_build(request, observed)
        for warning in observed.warnings:
            module.warn(warning)
        if plan and not module.check_mode:
            builder = Builder(runner, request, observed, scan)
            try:
                builder.run(plan)
            finally:
                for warning in builder.warnings:
                    module.warn(warning)
        target = image_path(request)
        size = os.lstat(target).st_size if os.path.lexists(target) else None
    except (ImmutableRootError, OSError) as exc:
        module.fail_json(changed=bool(builder and builder.done), actions=as_dicts(builder.done) if builder else [],
                         **failure(exc))

    result = dict(
        changed=bool(plan),
        actions=as_dicts(builder.done if builder else plan),
        path=target,
        format=request.format,
        file_count=observed.file_count,
        size=size,
        digest=observed.digest,
        release=with_digest(observed.release, observed.digest),
        dropped=list(observed.dropped[:DROPPED_LIMIT]),
        dropped_count=len(observed.dropped),
    )
    if module._diff:
        # Image path -> the digest in its release file (null: an image this module did not build).
        before = {image.path: image.digest for image in observed.existing}
        result["diff"] = dict(before=dict(images=before), after=dict(images={target: observed.digest}))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
