# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Compatibility: _btrfs_layout moved into packages; import from the new place. Removed after merging."""

from __future__ import annotations

from ansible_collections.immutable.root.plugins.module_utils._btrfs.model import (  # noqa: F401
    COMMONS,
    COMMON_PATTERN,
    CURRENT,
    FSTAB,
    Generation,
    GenerationError,
    LAYOUT_DIRECTORIES,
    LINKS,
    Layout,
    LinkDirectory,
    NAME_MAX,
    NAME_PATTERN,
    NEXT,
    PLACEHOLDER,
    ROOT_SUBVOLUME,
    ROOT_SUBVOL_RDONLY,
    SNAPSHOTS,
    STAGING_PREFIX,
    Stray,
    SubvolumeInfo,
    SubvolumeLine,
    TEMPORARY_LINK_PREFIX,
    TOP_LEVEL_ID,
    parse_current_target,
    parse_slot_target,
)
from ansible_collections.immutable.root.plugins.module_utils._linux.btrfs_ioctl import (  # noqa: F401
    SUBVOL_INFO_SIZE,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.parse import (  # noqa: F401
    generation_name_of,
    mounted_subvolumes,
    parse_filesystem_uuid,
    parse_subvolume_info,
    parse_subvolume_list,
    parse_subvolume_show,
    subvolid_of,
    utc_iso,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.plan import (  # noqa: F401
    history_slots,
    sort_generations,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.render import (  # noqa: F401
    common_mountpoint,
    current_target,
    default_template,
    generation_path,
    generations_state,
    render_fstab,
    summary_state,
)
from ansible_collections.immutable.root.plugins.module_utils._btrfs.request import (  # noqa: F401
    new_stamp,
    validate_common,
    validate_name,
)

__all__ = [
    'SUBVOL_INFO_SIZE',
    'COMMONS',
    'COMMON_PATTERN',
    'CURRENT',
    'FSTAB',
    'Generation',
    'GenerationError',
    'LAYOUT_DIRECTORIES',
    'LINKS',
    'Layout',
    'LinkDirectory',
    'NAME_MAX',
    'NAME_PATTERN',
    'NEXT',
    'PLACEHOLDER',
    'ROOT_SUBVOLUME',
    'ROOT_SUBVOL_RDONLY',
    'SNAPSHOTS',
    'STAGING_PREFIX',
    'Stray',
    'SubvolumeInfo',
    'SubvolumeLine',
    'TEMPORARY_LINK_PREFIX',
    'TOP_LEVEL_ID',
    'common_mountpoint',
    'current_target',
    'default_template',
    'generation_name_of',
    'generation_path',
    'generations_state',
    'history_slots',
    'mounted_subvolumes',
    'new_stamp',
    'parse_current_target',
    'parse_filesystem_uuid',
    'parse_slot_target',
    'parse_subvolume_info',
    'parse_subvolume_list',
    'parse_subvolume_show',
    'render_fstab',
    'sort_generations',
    'subvolid_of',
    'summary_state',
    'utc_iso',
    'validate_common',
    'validate_name',
]
