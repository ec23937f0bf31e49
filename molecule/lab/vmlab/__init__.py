# Copyright: immutable.root contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""VM lab for the immutable.root collection: cached Debian trees and images, QEMU instances.

Standard library only, so the same code serves the CLI (labctl.py), molecule's create/destroy playbooks
and the host tests, whatever Python runs them.
"""
