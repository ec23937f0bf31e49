"""VM lab for the immutable.root collection: cached Debian trees and images, QEMU instances.

Standard library only, so the same code serves the CLI (labctl.py), molecule's create/destroy playbooks
and the host tests, whatever Python runs them.
"""
