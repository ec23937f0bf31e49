# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Sphinx configuration of the docsite (after antsibull-docs sphinx-init), built offline by `make docs`."""

from __future__ import annotations

from docutils import nodes

project = 'immutable.root'
copyright = 'immutable.root contributors'  # pylint: disable=redefined-builtin
title = 'immutable.root'
html_short_title = 'immutable.root'

extensions = ['sphinx_antsibull_ext', 'myst_parser']
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
myst_heading_anchors = 3
myst_enable_extensions = ['colon_fence']

pygments_style = 'ansible'
highlight_language = 'YAML+Jinja'
html_theme = 'sphinx_ansible_theme'
html_show_sphinx = False
display_version = False
html_use_smartypants = True
html_use_modindex = False
html_use_index = False
html_copy_source = False
html_theme_options = {'collapse_navigation': False, 'navigation_depth': 3}

default_role = 'any'
nitpicky = True

# No intersphinx: the build is offline. The generated pages link to a few labels of the Ansible
# documentation; those become plain links to the published pages, and any other unresolved
# reference stays a warning (and sphinx-build -W fails).
ANSIBLE_DOCS = 'https://docs.ansible.com/projects/ansible/latest/'
EXTERNAL_LABELS = {
    'common_return_values': 'reference_appendices/common_return_values.html',
    'ansible_configuration_settings': 'reference_appendices/config.html',
    'check_mode_dry': 'playbook_guide/playbooks_checkmode.html',
    'module_defaults': 'playbook_guide/playbooks_module_defaults.html',
    'playbooks_async': 'playbook_guide/playbooks_async.html',
    'become': 'playbook_guide/playbooks_privilege_escalation.html',
    'intro_adhoc': 'command_guide/intro_adhoc.html',
    'collections_installing': 'collections_guide/collections_installing.html',
}


def _external_label(app, env, node, contnode):  # pylint: disable=unused-argument
    target = node.get('reftarget', '')
    if node.get('refdomain') != 'std':
        return None
    uri = None
    if target in EXTERNAL_LABELS:
        uri = ANSIBLE_DOCS + EXTERNAL_LABELS[target]
    elif target.startswith('ansible_collections.') and not target.startswith('ansible_collections.immutable.root.'):
        # a plugin of another collection (seealso: ansible.posix.mount, community.general.btrfs_subvolume)
        parts = target.split('.')
        if len(parts) == 4 and parts[3].endswith(('_module', '_role')):
            uri = f'{ANSIBLE_DOCS}collections/{parts[1]}/{parts[2]}/{parts[3]}.html'
    if uri is None:
        return None
    ref = nodes.reference('', '', internal=False, refuri=uri)
    ref += contnode
    return ref


def setup(app):
    app.connect('missing-reference', _external_label)
